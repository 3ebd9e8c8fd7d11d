//! libFuzzer target `tus`: the tus headers of the files endpoint
//! (`Upload-Metadata`, `Upload-Checksum`, `Range`, file names), under the
//! property of `starling::fuzz::check` (no panic, whatever the input).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| starling::fuzz::check("tus", data));
