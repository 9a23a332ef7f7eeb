//! The interactive `auto-init`, driven through a pseudo-terminal with the seed's answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Workstation;
use rexpect::session::{spawn_command, PtySession};

fn spawn(w: &Workstation, args: &[&str]) -> PtySession {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tke"));
    c.arg("--files-dir").arg(w.path()).args(args);
    c.env_remove("CLOUDTKEFILES");
    spawn_command(c, Some(60_000)).unwrap()
}

#[test]
fn interactive_auto_init_follows_the_vendor_prompts() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init", "--instances", "2"]);
    let s = w.secrets(&[("admin1", "first-admin-pw"), ("admin2", "second-admin-pw")]);
    w.ok(&[
        "--secrets",
        s.to_str().unwrap(),
        "sigkey-add",
        "--name",
        "admin1",
    ]);
    w.ok(&[
        "--secrets",
        s.to_str().unwrap(),
        "sigkey-add",
        "--name",
        "admin2",
    ]);

    let mut p = spawn(&w, &["auto-init"]);
    p.exp_string("More than one service instance is assigned to the current resource group.")
        .unwrap();
    p.exp_string("INSTANCE NUM").unwrap();
    p.exp_string("Enter the INSTANCE NUM of the service instance you want to initialize.")
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("2").unwrap();

    p.exp_string("ENTER SIGNATURE THRESHOLD VALUES").unwrap();
    p.exp_string("required on commands sent to the service instance.")
        .unwrap();
    p.exp_string("> ").unwrap();
    // A bad answer is explained and asked again.
    p.send_line("9").unwrap();
    p.exp_string("between 1 and 8").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("1").unwrap();
    p.exp_string("required on commands to remove an administrator.")
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("1").unwrap();

    p.exp_string("ENTER NUMBER OF ADMINISTRATORS TO INSTALL")
        .unwrap();
    p.exp_string("you must install at least 1 administrator.")
        .unwrap();
    p.exp_string("Enter the number of administrators you want to install:")
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("1").unwrap();

    p.exp_string("SELECT EXISTING SIGNATURE KEY FILES TO USE")
        .unwrap();
    p.exp_string("KEYNUM").unwrap();
    p.exp_string("admin1").unwrap();
    p.exp_string("Enter the KEYNUM of the existing signature key files you want to use to create administrators:").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("1").unwrap();
    p.exp_string("Enter the password for the signature key identified by:")
        .unwrap();
    p.exp_string("admin1 (").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("first-admin-pw").unwrap();

    p.exp_string("You asked to install one administrator and selected one existing signature key to use.  No new signature key files will be created.").unwrap();
    p.exp_string("(y/N)").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("Installing 1 of 1 administrators....")
        .unwrap();
    p.exp_string("Setting signature thresholds....").unwrap();
    p.exp_string("Generating a random master key value....")
        .unwrap();
    p.exp_string("Transferring the master key value to 3 of 3 crypto units....")
        .unwrap();
    p.exp_string("OK").unwrap();
    p.exp_string("The selected service instance has been initialized.")
        .unwrap();
    p.exp_eof().unwrap();

    // Instance 2 only: its 4 units are selected and valid; instance 1 is untouched.
    let units = w.compare_json();
    let units = units.as_array().unwrap();
    assert_eq!(units.len(), 4);
    for u in units {
        assert_eq!(u["current_mk"]["state"], "valid");
        assert_eq!(u["admins"][0]["name"], "admin1");
        assert!(u["num"].as_u64().unwrap() > 4);
    }
}

#[test]
fn interactive_auto_init_creates_new_keys_on_the_spot() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let mut p = spawn(&w, &["auto-init"]);
    p.exp_string("> ").unwrap();
    p.send_line("2").unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("2").unwrap();
    p.exp_string("Enter the number of administrators you want to install:")
        .unwrap();
    p.exp_string("> ").unwrap();
    p.send_line("2").unwrap();
    for (i, name) in [(1, "dora"), (2, "emil")] {
        p.exp_string(&format!("new signature key {i} of 2"))
            .unwrap();
        p.exp_string("> ").unwrap();
        p.send_line(name).unwrap();
    }
    p.exp_string("2 new signature key files will be created.")
        .unwrap();
    p.exp_string("(y/N)").unwrap();
    p.send_line("y").unwrap();
    for name in ["dora", "emil"] {
        p.exp_string(&format!("the new signature key of {name}"))
            .unwrap();
        p.exp_string("> ").unwrap();
        p.send_line(&format!("{name}-secret-pw")).unwrap();
        p.exp_string("Re-enter the password").unwrap();
        p.exp_string("> ").unwrap();
        p.send_line(&format!("{name}-secret-pw")).unwrap();
    }
    p.exp_string("Installing 2 of 2 administrators....")
        .unwrap();
    p.exp_string("OK").unwrap();
    p.exp_eof().unwrap();
    let keys: serde_json::Value =
        serde_json::from_str(&w.ok(&["sigkeys", "--output", "json"])).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    for u in w.compare_json().as_array().unwrap() {
        assert_eq!(u["sig_threshold"], 2);
        assert_eq!(u["current_mk"]["state"], "valid");
    }
}

#[test]
fn declining_the_confirmation_changes_nothing() {
    let w = Workstation::new(env!("CARGO_BIN_EXE_tke"));
    w.ok(&["local", "init"]);
    let s = w.secrets(&[("admin1", "first-admin-pw")]);
    w.ok(&[
        "--secrets",
        s.to_str().unwrap(),
        "sigkey-add",
        "--name",
        "admin1",
    ]);
    let before = w.snapshot();
    let mut p = spawn(
        &w,
        &[
            "--secrets",
            s.to_str().unwrap(),
            "auto-init",
            "--sig-threshold",
            "1",
            "--rev-threshold",
            "1",
            "--admin",
            "admin1",
        ],
    );
    p.exp_string("(y/N)").unwrap();
    p.send_line("n").unwrap();
    p.exp_string("Cancelled. No crypto unit was changed.")
        .unwrap();
    p.exp_eof().unwrap();
    assert_eq!(before, w.snapshot());
}
