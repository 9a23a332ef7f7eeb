//! `tke` on a pseudo-terminal: prompts answered as an operator would, and a transcript of
//! what the terminal showed, for the snapshots of prompts and confirmations.

use rexpect::{
    process::wait::WaitStatus,
    session::{spawn_command, PtySession},
};

use super::{snap, Workstation};

/// What the operator types at a prompt.
pub enum Answer<'a> {
    /// A line, shown in the transcript.
    Line(&'a str),
    /// A line typed at a hidden entry: shown as `[hidden]`.
    Hidden(&'a str),
    /// End of input (Ctrl-D at the start of a line).
    End,
}

/// One exchange: wait for `.0`, then answer `.1`.
pub type Step<'a> = (&'a str, Answer<'a>);

/// A `tke` process on a pseudo-terminal, and what its terminal showed so far.
pub struct Terminal {
    p: PtySession,
    text: String,
    args: Vec<String>,
}

impl Terminal {
    /// Starts `tke` with `--files-dir` set, on a pseudo-terminal.
    pub fn spawn(w: &Workstation, args: &[&str]) -> Self {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tke"));
        c.arg("--files-dir").arg(w.path()).args(args);
        c.env_remove("CLOUDTKEFILES");
        Self {
            p: spawn_command(c, Some(60_000)).unwrap(),
            text: String::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Waits until the terminal shows `at`.
    pub fn expect(&mut self, at: &str) {
        let before = self.p.exp_string(at).unwrap();
        self.text.push_str(&before);
        self.text.push_str(at);
    }

    /// Types an answer. The terminal does not echo (rexpect turns echo off): the
    /// transcript shows the answer as the operator would see it.
    pub fn answer(&mut self, answer: &Answer) {
        match answer {
            Answer::Line(a) => {
                self.p.send_line(a).unwrap();
                self.text.push_str(a);
                self.text.push('\n');
            }
            Answer::Hidden(a) => {
                self.p.send_line(a).unwrap();
                // The new line is rpassword's.
                self.text.push_str("[hidden]");
            }
            Answer::End => self.p.send_control('d').unwrap(),
        }
    }

    /// Waits for the end; returns the transcript (without carriage returns) and the exit
    /// code.
    pub fn finish(mut self) -> (String, i32) {
        self.text.push_str(&self.p.exp_eof().unwrap());
        let code = match self.p.process.wait().unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("tke {:?} ended with {other:?}", self.args),
        };
        (self.text.replace('\r', ""), code)
    }

    /// Waits for the end, asserts the exit code and the snapshot `name` of the transcript
    /// (`paths` shown as their labels).
    pub fn check(self, name: &str, code: i32, paths: &[(&std::path::Path, &str)]) {
        let (text, got) = self.finish();
        assert_eq!(got, code, "{name}: exit code\n{text}");
        let text = snap::redact_paths(&text, paths);
        snap::assert_snapshot(name, &format!("exit code: {got}\n--- terminal\n{text}"));
    }
}

/// Runs `tke` through `steps` on a pseudo-terminal, asserts its exit code, the snapshot
/// `name` of the terminal, and that no file of the workstation changed.
pub fn check_steps(w: &Workstation, name: &str, args: &[&str], steps: &[Step], code: i32) {
    let before = w.snapshot();
    let mut t = Terminal::spawn(w, args);
    for (at, answer) in steps {
        t.expect(at);
        t.answer(answer);
    }
    t.check(name, code, &[(w.path(), "[WS]")]);
    assert_eq!(before, w.snapshot(), "{name}: files changed");
}
