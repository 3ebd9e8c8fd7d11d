//! libFuzzer target `config`: the property of `starling::fuzz::check` (no panic,
//! whatever the input) under coverage guidance.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| starling::fuzz::check("config", data));
