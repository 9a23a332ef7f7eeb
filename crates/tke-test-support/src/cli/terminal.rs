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
    /// Starts the workstation's `tke` with `--files-dir` set, on a pseudo-terminal.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn(w: &Workstation, args: &[&str]) -> Self {
        let mut c = w.command();
        c.args(args);
        Self::spawn_command(c, args)
    }

    /// Starts `c` (another program, such as `tke-unitd`, with `args` given already) on a
    /// pseudo-terminal; `args` name it in panic messages.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn_command(c: std::process::Command, args: &[&str]) -> Self {
        Self {
            p: spawn_command(c, Some(60_000))
                .unwrap_or_else(|e| panic!("cannot start {args:?} on a terminal: {e}")),
            text: String::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Waits until the terminal shows `at`.
    ///
    /// # Panics
    /// When it does not within 60 s, or the process ends first.
    pub fn expect(&mut self, at: &str) {
        let before = self.p.exp_string(at).unwrap_or_else(|e| {
            panic!(
                "tke {:?}: waiting for {at:?}: {e}\n{}",
                self.args, self.text
            )
        });
        self.text.push_str(&before);
        self.text.push_str(at);
    }

    /// Types an answer. The terminal does not echo (rexpect turns echo off): the
    /// transcript shows the answer as the operator would see it.
    ///
    /// # Panics
    /// When the terminal cannot be written.
    pub fn answer(&mut self, answer: &Answer) {
        let sent = match answer {
            Answer::Line(a) => {
                self.text.push_str(a);
                self.text.push('\n');
                self.p.send_line(a).map(drop)
            }
            Answer::Hidden(a) => {
                // The new line is rpassword's.
                self.text.push_str("[hidden]");
                self.p.send_line(a).map(drop)
            }
            Answer::End => self.p.send_control('d'),
        };
        sent.unwrap_or_else(|e| panic!("tke {:?}: typing an answer: {e}", self.args));
    }

    /// Waits for the end; returns the transcript (without carriage returns) and the exit
    /// code.
    ///
    /// # Panics
    /// When the process does not end within 60 s, or ends by a signal.
    pub fn finish(mut self) -> (String, i32) {
        let rest = self
            .p
            .exp_eof()
            .unwrap_or_else(|e| panic!("tke {:?}: waiting for the end: {e}", self.args));
        self.text.push_str(&rest);
        let status = self
            .p
            .process
            .wait()
            .unwrap_or_else(|e| panic!("tke {:?}: {e}", self.args));
        let code = match status {
            WaitStatus::Exited(_, code) => code,
            other => panic!("tke {:?} ended with {other:?}", self.args),
        };
        (self.text.replace('\r', ""), code)
    }

    /// Waits for the end, asserts the exit code and the snapshot `name` of the transcript
    /// (`paths` shown as their labels).
    ///
    /// # Panics
    /// When either differs.
    pub fn check(self, name: &str, code: i32, paths: &[(&std::path::Path, &str)]) {
        let (text, got) = self.finish();
        assert_eq!(got, code, "{name}: exit code\n{text}");
        let text = snap::redact_paths(&text, paths);
        snap::assert_snapshot(name, &format!("exit code: {got}\n--- terminal\n{text}"));
    }
}

/// Runs `tke` through `steps` on a pseudo-terminal, asserts its exit code, the snapshot
/// `name` of the terminal, and that no file of the workstation changed.
///
/// # Panics
/// When any of these differs.
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
