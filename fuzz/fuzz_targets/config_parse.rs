#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamgate::fuzzing::config_parse(data));
