//! Prompts: the vendor's `> ` prompts on a terminal, hidden password entry, and, without
//! a terminal, an error that names the flag that would have answered.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use tke_workstation::Password;
use zeroize::Zeroizing;

/// Asks questions when standard input is a terminal; refuses otherwise.
pub struct Prompter {
    interactive: bool,
}

impl Prompter {
    /// A prompter for this process: interactive when standard input is a terminal.
    pub fn new() -> Self {
        Self {
            interactive: io::stdin().is_terminal(),
        }
    }

    /// Whether questions can be asked.
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    fn require(&self, flag: &str) -> Result<()> {
        if !self.interactive {
            bail!("no terminal to ask on: give the answer with {flag}");
        }
        Ok(())
    }

    /// Prints `text`, then `> `, and reads one line. `flag` names the option that answers
    /// the question in scripts.
    pub fn line(&self, text: &str, flag: &str) -> Result<String> {
        self.require(flag)?;
        let mut out = io::stdout().lock();
        writeln!(out, "{text}")?;
        write!(out, "> ")?;
        out.flush()?;
        drop(out);
        let mut s = String::new();
        let n = io::stdin()
            .lock()
            .read_line(&mut s)
            .context("reading the answer")?;
        if n == 0 {
            bail!("standard input closed before an answer was given");
        }
        Ok(s.trim().to_owned())
    }

    /// Asks until `parse` accepts the answer, printing its error each time.
    pub fn ask<T>(&self, text: &str, flag: &str, parse: impl Fn(&str) -> Result<T>) -> Result<T> {
        Self::until(|| self.line(text, flag).map(Zeroizing::new), parse)
    }

    /// As [`Prompter::ask`], at a hidden entry: for a secret value.
    pub fn ask_hidden<T>(
        &self,
        text: &str,
        flag: &str,
        parse: impl Fn(&str) -> Result<T>,
    ) -> Result<T> {
        Self::until(|| self.hidden(text, flag), parse)
    }

    /// Reads answers until `parse` accepts one, printing its error each time.
    fn until<T>(
        read: impl Fn() -> Result<Zeroizing<String>>,
        parse: impl Fn(&str) -> Result<T>,
    ) -> Result<T> {
        loop {
            let answer = read()?;
            match parse(&answer) {
                Ok(v) => return Ok(v),
                Err(e) => println!("{}\n", crate::report::chain(&e)),
            }
        }
    }

    /// A hidden entry: what is typed is not shown, and is zeroized when dropped.
    pub fn hidden(&self, text: &str, flag: &str) -> Result<Zeroizing<String>> {
        self.hidden_entry(text, flag, "reading the hidden entry")
    }

    /// A hidden password entry.
    pub fn password(&self, text: &str, flag: &str) -> Result<Password> {
        let p = self.hidden_entry(text, flag, "reading the password")?;
        Ok(Password::new(p.as_str()))
    }

    fn hidden_entry(
        &self,
        text: &str,
        flag: &str,
        what: &'static str,
    ) -> Result<Zeroizing<String>> {
        self.require(flag)?;
        println!("{text}");
        let p = rpassword::prompt_password("> ").context(what)?;
        Ok(Zeroizing::new(p))
    }

    /// A new password, entered twice.
    pub fn new_password(&self, what: &str, flag: &str) -> Result<Password> {
        loop {
            let a = self.password(&format!("Enter the password for {what}:"), flag)?;
            if a.is_empty() {
                println!("The password must not be empty.\n");
                continue;
            }
            let b = self.password("Re-enter the password to confirm it:", flag)?;
            if a.expose_secret() != b.expose_secret() {
                println!("The passwords do not match. Try again.\n");
                continue;
            }
            if let Some(why) = weak_password(a.expose_secret()) {
                println!("Warning: this password is weak: {why}.");
                if !self.confirm("Use it anyway?", false)? {
                    println!();
                    continue;
                }
            }
            return Ok(a);
        }
    }

    /// A `y/N` confirmation; `yes` answers it in scripts (`--yes`).
    pub fn confirm(&self, text: &str, yes: bool) -> Result<bool> {
        if yes {
            return Ok(true);
        }
        let a = self.line(&format!("{text} (y/N)"), "--yes")?;
        Ok(matches!(a.as_str(), "y" | "Y" | "yes" | "YES" | "Yes"))
    }
}

/// Why a new key-file password is weak, if it is: shorter than 12 characters, or one of
/// the passwords tried first by anyone guessing (a short list; a key file that leaves
/// the workstation can be attacked offline).
pub fn weak_password(p: &str) -> Option<&'static str> {
    const COMMON: &[&str] = &[
        "123456789012",
        "password1234",
        "passwordpassword",
        "qwertyuiopas",
        "qwerty123456",
        "iloveyou1234",
        "administrator",
        "correcthorsebatterystaple",
        "letmeinletmein",
        "1q2w3e4r5t6y",
        "abcdefghijkl",
        "welcome12345",
        "changeme1234",
        "000000000000",
        "111111111111",
        "trustno1trustno1",
    ];
    if p.chars().count() < 12 {
        Some("it is shorter than 12 characters")
    } else if COMMON.iter().any(|c| c.eq_ignore_ascii_case(p)) {
        Some("it is one of the most common passwords")
    } else {
        None
    }
}

/// One number as a user types it on the command line or at a prompt: `-1` or `x` gets a
/// message naming what was expected (`"x" is not an INSTANCE NUM`), not a parser's text.
pub fn whole_number(t: &str, what: &str) -> std::result::Result<usize, String> {
    t.parse().map_err(|_| {
        let article = if what.starts_with(['A', 'E', 'I', 'O', 'U']) {
            "an"
        } else {
            "a"
        };
        format!("{t:?} is not {article} {what}: enter whole numbers from 1, separated by spaces")
    })
}

/// Parses a space-separated list of numbers, each in 1..=max.
pub fn parse_numbers(s: &str, max: usize, what: &str) -> Result<Vec<usize>> {
    let mut v = Vec::new();
    for t in s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        let n = whole_number(t, what).map_err(anyhow::Error::msg)?;
        if n == 0 || n > max {
            bail!("{what} {n} does not exist: choose between 1 and {max}");
        }
        if !v.contains(&n) {
            v.push(n);
        }
    }
    Ok(v)
}
