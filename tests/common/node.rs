//! A Node script driven over a line protocol: it prints a line per step on
//! stdout, the test checks it and answers on the script's stdin; `DONE` ends
//! it. Used by the JavaScript client and browser tests (the test command
//! installs Node dependencies and Chromium).

use super::within_for;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// See [`NodeScript::line`].
const LINE_WAIT: Duration = Duration::from_secs(60);

pub struct NodeScript {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
}

impl NodeScript {
    /// Starts `node [node_args] script [args]`.
    pub fn start(node_args: &[String], script: &str, args: &[String]) -> NodeScript {
        let mut child = Command::new("node")
            .args(node_args)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (the test command installs Node, the web/ and tests/js dependencies, and Chromium)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdin = child.stdin.take();
        NodeScript { child, lines, stdin }
    }

    /// The next line. The bound is longer than any one wait inside a script
    /// (10 s each in tests/js/chromium.mjs), and a step may chain several:
    /// when a script is stuck it fails first and names what it waited for,
    /// instead of this side timing out with nothing to say.
    pub async fn line(&mut self) -> String {
        within_for(LINE_WAIT, "a line from the node script", self.lines.next_line())
            .await
            .unwrap()
            .expect("the node script ended early (its error is above)")
    }

    pub async fn expect(&mut self, line: &str) {
        assert_eq!(self.line().await, line);
    }

    pub async fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open until finish");
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for `DONE` and a successful exit.
    pub async fn finish(mut self) {
        self.expect("DONE").await;
        drop(self.stdin.take());
        let status = within_for(LINE_WAIT, "the node script to exit", self.child.wait()).await.unwrap();
        assert!(status.success(), "node script failed: {status}");
    }
}
