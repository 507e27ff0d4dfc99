#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamgate::fuzzing::forward_extract(data));
