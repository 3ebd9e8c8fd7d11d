//! A bounded smoke run of both fuzzers' properties in the test command:
//! - `starling fuzz`'s mutation fuzzer, every parser target, 20,000 inputs each;
//! - every input of the coverage-guided fuzzer's committed corpora
//!   (`fuzz/corpus/<target>/`, minimised libFuzzer corpora) and of its
//!   regressions (`fuzz/regressions/<target>/`, inputs that once crashed a
//!   parser), replayed through the same property, `starling::fuzz::check`.
//!
//! The long runs are recorded in docs/security.md; fuzz/README.md says how
//! to run libFuzzer here.

use std::path::Path;

#[test]
fn every_parser_survives_mutated_inputs() {
    for target in starling::fuzz::TARGETS {
        let report = starling::fuzz::run(target, 20_000, 0x5EED).unwrap();
        assert!(report.crashes.is_empty(), "{target}: crashing inputs (hex): {:?}", report.crashes);
    }
}

#[test]
fn every_committed_corpus_and_regression_input_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for target in starling::fuzz::TARGETS {
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let input = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| starling::fuzz::check(target, &input));
                assert!(outcome.is_ok(), "{target}: {} panics", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "{target}: no committed corpus in fuzz/corpus/{target}");
    }
}
