//! libFuzzer target `starling-v1`: the property of `starling::fuzz::check` (no panic,
//! whatever the input) under coverage guidance.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| starling::fuzz::check("starling-v1", data));
