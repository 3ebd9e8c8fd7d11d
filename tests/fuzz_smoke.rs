//! A bounded smoke run of `starling fuzz` in the test command: every parser
//! target, a few thousand mutated inputs each, no panic. The long runs
//! (tens of millions of inputs) are recorded in docs/security.md.

#[test]
fn every_parser_survives_mutated_inputs() {
    for target in starling::fuzz::TARGETS {
        let report = starling::fuzz::run(target, 20_000, 0x5EED).unwrap();
        assert!(report.crashes.is_empty(), "{target}: crashing inputs (hex): {:?}", report.crashes);
    }
}
