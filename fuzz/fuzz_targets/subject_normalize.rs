#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamgate::fuzzing::subject_normalize(data));
