#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teamgate::fuzzing::ingest_fetch(data));
