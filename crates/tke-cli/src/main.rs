//! `tke`: the TKE command line. Commands are named and behave as the vendor's TKE CLI.
//!
//! Exit codes: 0 success, 1 failure (`FAILED` and the reason on standard error),
//! 2 usage error, 3 cancelled at a confirmation, 4 a ceremony file that still lacks
//! approvals (`tke apply`).
//!
//! `TKE_LOG=error|warn|info|debug|trace` writes diagnostics to standard error; they never
//! hold a password, PIN or key.
#![forbid(unsafe_code)]

mod admins;
mod approvals;
mod audit;
mod auto_init;
mod auto_init_resume;
mod auto_recover;
mod context;
mod control_points;
mod failover;
mod guard;
mod journal;
mod keyparts;
mod kms;
mod local;
mod logging;
mod mk_load;
mod prompt;
mod registers;
mod report;
mod rotate;
mod secrets;
mod sigkeys;
mod signing;
mod table;
mod targets;
mod units;
mod yubikey;
mod zeroize;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use tke_ceremony::RegisterAction;
use tke_proto::ControlPoint;

/// The operator declined a confirmation: not a success, not a failure.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled by the operator")
    }
}

impl std::error::Error for Cancelled {}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

/// Trusted Key Entry: take ownership of HSM crypto units, install quorum administrators,
/// and load, rotate and recover the master key.
///
/// Crypto units are those of the tke-unitd servers added with `tke target add` (or named
/// by TKE_TARGETS, with TKE_CA_FILE and TKE_API_KEY_FILE). Without a target, commands use
/// the embedded fleet of emulated crypto units in FILES_DIR/local, created on first use.
#[derive(Parser, Debug)]
#[command(name = "tke", version, disable_help_subcommand = true)]
struct Cli {
    /// Workstation directory for signature keys, selections and the embedded fleet.
    /// Default: $CLOUDTKEFILES, else ~/.local/share/tke.
    #[arg(long, global = true, value_name = "DIR")]
    files_dir: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// TOML file of signature key passwords and token PINs (PKCS#11 token or YubiKey)
    /// (`NAME = "password or PIN"`, by administrator name), master key part passwords
    /// (`"DESCRIPTION" = "password"`), and YubiKey management keys
    /// (`"management-key-SERIAL" = "hex"`), for scripts. Secrets are never taken from the
    /// command line.
    #[arg(long, global = true, value_name = "FILE")]
    secrets: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List every service instance and its crypto units
    Cryptounits,
    /// Add crypto units to the selection
    CryptounitAdd {
        /// CRYPTO UNIT NUM values (asked for when omitted).
        #[arg(allow_negative_numbers = true, value_parser = |s: &str| prompt::whole_number(s, "CRYPTO UNIT NUM"))]
        nums: Vec<usize>,
    },
    /// Remove crypto units from the selection
    CryptounitRm {
        /// CRYPTO UNIT NUM values (asked for when omitted).
        #[arg(allow_negative_numbers = true, value_parser = |s: &str| prompt::whole_number(s, "CRYPTO UNIT NUM"))]
        nums: Vec<usize>,
    },
    /// Compare the configuration of the selected crypto units
    ///
    /// Compare the configuration of the selected crypto units: thresholds, administrators,
    /// control points, master key registers.
    CryptounitCompare,
    /// List the signature keys on this workstation
    Sigkeys,
    /// Create a signature key: in a file, on a PKCS#11 token or on a YubiKey
    ///
    /// Create a signature key (P-256) in a password-protected file, on a PKCS#11 token
    /// (--pkcs11), or on a YubiKey (--yubikey).
    SigkeyAdd {
        /// The administrator name (up to 30 characters; asked for when omitted).
        #[arg(long)]
        name: Option<String>,
        /// Generate the key on the PKCS#11 token this RFC 7512 URI names, e.g.
        /// `pkcs11:token=LABEL;object=KEYLABEL?module-path=/path/to/module.so` — or, if
        /// the URI names a key pair already on the token, register that one. The user PIN
        /// comes from --secrets (`NAME = "PIN"`), the URI's `pin-source=file:/path`, or a
        /// hidden prompt; `pin-value` is refused. The workstation keeps only the URI and
        /// the certificate. Not with --yubikey (nor its options).
        #[arg(
            long,
            value_name = "URI",
            conflicts_with_all = [
                "yubikey", "serial", "slot", "pin_policy", "touch_policy",
                "management_key", "existing", "overwrite_slot",
            ]
        )]
        pkcs11: Option<String>,
        #[command(flatten)]
        yubikey: yubikey::AddArgs,
    },
    /// Delete signature keys from this workstation
    ///
    /// Delete signature key files.
    SigkeyRm {
        /// KEYNUM values (asked for when omitted).
        #[arg(allow_negative_numbers = true, value_parser = |s: &str| prompt::whole_number(s, "KEYNUM"))]
        nums: Vec<usize>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Select the signature keys that may sign later commands
    ///
    /// Select the signature keys that may sign later commands, or show the selection.
    ///
    /// The selection says which keys MAY sign, not which will: a command that signs takes,
    /// on each crypto unit, as many selected keys installed there as it needs (the unit's
    /// signature or revocation threshold, or one), asks only their passwords, and prints
    /// which administrators signed. With nothing selected, every signature key on this
    /// workstation may sign. `--signer NAME` (repeatable) on a command overrides the
    /// selection for that command. A new selection replaces the previous one; it has no
    /// size limit.
    SigkeySel {
        /// KEYNUM values (asked for when omitted).
        #[arg(allow_negative_numbers = true, value_parser = |s: &str| prompt::whole_number(s, "KEYNUM"))]
        nums: Vec<usize>,
        /// Show the current selection; change nothing.
        #[arg(long, conflicts_with_all = ["nums", "clear"])]
        show: bool,
        /// Empty the selection: every signature key on this workstation may sign again.
        #[arg(long, conflicts_with = "nums")]
        clear: bool,
    },
    /// List the master key parts on this workstation
    ///
    /// List the master key parts on this workstation, with their verification patterns.
    #[command(after_long_help = keyparts::MKS_HELP)]
    Mks,
    /// Create a master key part in a password-protected file
    ///
    /// Create a master key part (random, or a value you give) in a password-protected file.
    MkAdd(keyparts::AddArgs),
    /// Delete a master key part file
    MkRm(keyparts::RmArgs),
    /// List the administrators installed in the selected crypto units
    ///
    /// List the administrators installed in each selected crypto unit: name and subject key
    /// identifier.
    CryptounitAdmins,
    /// Install an administrator in the selected crypto units
    ///
    /// Install an administrator in every selected crypto unit: the signature key picked by
    /// KEYNUM (or --admin NAME) after its password proves it opens. Unsigned in imprint
    /// mode; otherwise signed by as many of the signature keys that may sign (--signer,
    /// else the `tke sigkey-sel` selection) as the signature threshold.
    CryptounitAdminAdd(admins::AddArgs),
    /// Remove an administrator from the selected crypto units
    ///
    /// Remove an administrator from every selected crypto unit. Unsigned in imprint mode;
    /// otherwise signed by as many installed keys that may sign as the revocation
    /// threshold. Refused when fewer administrators than either threshold would be left.
    CryptounitAdminRm(admins::RmArgs),
    /// Show the signature thresholds of the selected crypto units
    ///
    /// Show the signature and revocation thresholds of each selected crypto unit (0 and 0:
    /// imprint mode).
    CryptounitThrhlds,
    /// Set the signature thresholds of the selected crypto units
    ///
    /// Set the signature and revocation thresholds (1-8, at most the number of
    /// administrators) of every selected crypto unit. The first setting leaves imprint mode
    /// and is signed by as many administrators as the NEW signature threshold; later ones
    /// by the current signature threshold. No threshold returns to 0 but by zeroize.
    CryptounitThrhldSet(admins::ThresholdArgs),
    /// Leave imprint mode with thresholds 1 (deprecated: cryptounit-thrhld-set)
    ///
    /// Deprecated: leave imprint mode with both thresholds 1 (one administrator in
    /// control). Use cryptounit-thrhld-set.
    CryptounitExitImpr(admins::ExitArgs),
    /// Show the control points of the selected crypto units, or change one
    ///
    /// Show the control points of the selected crypto units, or set or reset one (--set N,
    /// --reset N), signed by as many administrators as the signature threshold.
    #[command(after_long_help = control_points::CP_HELP)]
    CryptounitCp(control_points::Args),
    /// Enable BIP32 and other bitcoin functions (XCP_CPB_BTC)
    ///
    /// Set control point XCP_CPB_BTC (66: BIP32 and other bitcoin functions) on every
    /// selected crypto unit, signed by as many administrators as the signature threshold.
    CryptounitCpBtc(control_points::EnableArgs),
    /// Enable EdDSA over Edwards curves (XCP_CPB_ALG_EC_25519)
    ///
    /// Set control point XCP_CPB_ALG_EC_25519 (55: EdDSA over Edwards curves) on every
    /// selected crypto unit, signed by as many administrators as the signature threshold.
    CryptounitCpEddsa(control_points::EnableArgs),
    /// Enable other signature schemes, such as Schnorr (XCP_CPB_ECDSA_OTHER)
    ///
    /// Set control point XCP_CPB_ECDSA_OTHER (67: signature schemes other than ECDSA and
    /// EdDSA, such as Schnorr) on every selected crypto unit, signed by as many
    /// administrators as the signature threshold.
    CryptounitCpSigOther(control_points::EnableArgs),
    /// Show the new and current master key registers
    ///
    /// Show both master key registers (new and current) of the selected crypto units:
    /// status and verification pattern.
    #[command(visible_alias = "cryptounit-mks")]
    CryptounitMk,
    /// Load the new master key register from master key parts
    ///
    /// Load the new master key register of the selected crypto units from 2 or 3 master key
    /// parts (`tke mks`): each unit makes a single-use importer key, each part is sealed to
    /// it, and the unit combines them (one signature for each). The new register becomes
    /// Full Uncommitted; commit it next.
    CryptounitMkLoad(mk_load::Args),
    /// Commit the new master key register
    ///
    /// Commit the new master key register of the selected crypto units (Full Uncommitted to
    /// Full Committed; every unit must hold the same value), signed by as many
    /// administrators as the signature threshold.
    CryptounitMkCommit(registers::Args),
    /// Make the committed new master key the current one
    ///
    /// Make the committed new master key the current one in the selected crypto units (one
    /// signature; asks first: the current master key register changes).
    CryptounitMkSetimm(registers::ConfirmArgs),
    /// Rotate the master key to the committed new value
    ///
    /// Rotate the master key of the selected service instance (every crypto unit of it
    /// selected) to the value committed in every new master key register (after
    /// `tke cryptounit-mk-load` and `tke cryptounit-mk-commit`): key storage is
    /// re-encrypted under it, then it becomes current in every unit (one signature).
    /// --resume finishes a rotation that was interrupted.
    CryptounitMkRotate(rotate::Args),
    /// Clear the new master key register
    ///
    /// Clear the new master key register of the selected crypto units (one signature).
    CryptounitMkClrnew(registers::Args),
    /// Clear the current master key register
    ///
    /// Clear the current master key register of the selected crypto units (one signature, a
    /// recovery unit's signature threshold; asks first: key storage is unusable until the
    /// same value is loaded again).
    CryptounitMkClrcur(registers::ClearCurrentArgs),
    /// Return the selected crypto units to imprint mode
    ///
    /// Return the selected crypto units to imprint mode: administrators, thresholds and
    /// both master key registers are cleared.
    CryptounitZeroize(zeroize::Args),
    /// Initialize a service instance with recovery crypto units
    ///
    /// Initialize a service instance with recovery crypto units: thresholds,
    /// administrators, and a random master key generated in a recovery unit and copied to
    /// every other unit.
    AutoInit(auto_init::Args),
    /// Rotate the master key to a random value from a recovery unit
    ///
    /// Rotate the master key of a service instance with recovery crypto units: a random
    /// value generated in a recovery unit's new master key register is copied to every
    /// other unit and committed (the signature threshold), key storage is re-encrypted
    /// under it, then it becomes current everywhere. --resume finishes a rotation that
    /// was interrupted, with the same new value.
    AutoMkRotate(rotate::AutoArgs),
    /// Recover the master key from a recovery unit
    ///
    /// Copy the current master key of a recovery crypto unit into every crypto unit of the
    /// service instance whose current master key register is empty (zeroized and
    /// re-imprinted with the instance's administrators and thresholds, or replaced).
    /// Units that hold the same key are left alone; one holding another key is refused.
    /// Run it again to finish an interrupted recovery.
    #[command(visible_alias = "auto-mk-recover")]
    AutoRecover(auto_recover::Args),
    /// Add failover crypto units to the selected service instance
    ///
    /// Add failover crypto units to the selected service instance (every unit of it
    /// selected): 2, or 2 or 3 when it has 3 operational units or more.
    FailoverEnable(failover::Args),
    /// Show and check the audit log of the selected crypto units
    ///
    /// Fetch the audit log of every selected crypto unit (one record per command it ran:
    /// counter, command, signers, result, time), check its hash chain and the unit's
    /// signature, and show who did what. An edited record, a gap or a truncated log is
    /// reported as tampering, naming the unit and the counter, and the command fails.
    CryptounitAudit(audit::Args),
    /// Write a ceremony file for administrators to approve instead of signing
    ///
    /// Write the commands of a ceremony on the selected crypto units to a ceremony file
    /// (docs/approvals.md) instead of signing and sending them: each administrator approves
    /// it on their own workstation (`tke approve`), then `tke apply` sends it.
    Plan(approvals::PlanArgs),
    /// Approve a ceremony file offline with an administrator's signature key
    ///
    /// Show every command of a ceremony file, decoded from the bytes that are signed, and
    /// sign them all with the signature key of one administrator (--admin NAME). No crypto
    /// unit is contacted. `--merge OUT IN IN…` unites the approvals of copies.
    Approve(approvals::ApproveArgs),
    /// Send the commands of an approved ceremony file
    ///
    /// Check that every crypto unit's command in the file carries the signatures of enough
    /// administrators installed on that unit, then send them and check the result. Exit
    /// code 4 when approvals are missing (nothing is sent).
    Apply(approvals::ApplyArgs),
    /// Root keys in key storage, and data keys wrapped under them
    #[command(subcommand)]
    Kms(kms::Cmd),
    /// The embedded fleet of emulated crypto units
    #[command(subcommand)]
    Local(LocalCmd),
    /// The tke-unitd servers (targets) whose crypto units commands use
    #[command(subcommand)]
    Target(TargetCmd),
    /// Show help for tke or for one command (`tke help auto-init`)
    #[command(visible_alias = "h")]
    Help {
        /// The command to explain.
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum LocalCmd {
    /// Create the embedded fleet (in FILES_DIR/local).
    Init(local::InitArgs),
}

#[derive(Subcommand, Debug)]
enum TargetCmd {
    /// Add a tke-unitd server: its URL, the fleet CA that certifies it, and the API key.
    Add(targets::AddArgs),
    /// List the targets.
    List,
    /// Remove a target (its files are left alone).
    Rm {
        /// The target's name.
        name: String,
    },
}

/// `tke help CMD` is `tke CMD --help`: the same text (global options included), and for
/// an unknown command the same message and exit code, because clap produces both.
fn help(path: &[String]) -> Result<()> {
    let args = std::iter::once("tke")
        .chain(path.iter().map(String::as_str))
        .chain(std::iter::once("--help"));
    match Cli::try_parse_from(args) {
        Err(e) => e.exit(),
        // `--help` always ends parsing with the help text; should a command ever accept
        // it as a value, fall back to the top-level help.
        Ok(_) => {
            use clap::CommandFactory as _;
            Cli::command().print_long_help()?;
            Ok(())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Cmd::Help { command } = &cli.command {
        return help(command);
    }
    let files = tke_workstation::FilesDir::resolve(cli.files_dir.as_deref())?;
    let secrets = cli
        .secrets
        .as_deref()
        .map(secrets::Secrets::load)
        .transpose()?;
    let ctx = context::Ctx {
        files,
        json: cli.output == Output::Json,
        secrets,
        prompt: prompt::Prompter::new(),
    };
    match &cli.command {
        Cmd::Cryptounits => units::cryptounits(&ctx),
        Cmd::CryptounitAdd { nums } => units::change_selection(&ctx, nums, true),
        Cmd::CryptounitRm { nums } => units::change_selection(&ctx, nums, false),
        Cmd::CryptounitCompare => units::compare(&ctx),
        Cmd::CryptounitAdmins => admins::show(&ctx, admins::View::Admins),
        Cmd::CryptounitThrhlds => admins::show(&ctx, admins::View::Thresholds),
        Cmd::CryptounitAdminAdd(a) => admins::add(&ctx, a),
        Cmd::CryptounitAdminRm(a) => admins::rm(&ctx, a),
        Cmd::CryptounitThrhldSet(a) => admins::set_thresholds(&ctx, a),
        Cmd::CryptounitExitImpr(a) => admins::exit_imprint_mode(&ctx, a),
        Cmd::CryptounitCp(a) => control_points::run(&ctx, a),
        Cmd::CryptounitCpBtc(a) => control_points::enable(&ctx, ControlPoint::BTC, a),
        Cmd::CryptounitCpEddsa(a) => control_points::enable(&ctx, ControlPoint::ALG_EC_25519, a),
        Cmd::CryptounitCpSigOther(a) => control_points::enable(&ctx, ControlPoint::ECDSA_OTHER, a),
        Cmd::CryptounitMk => units::mk(&ctx),
        Cmd::CryptounitMkLoad(a) => mk_load::run(&ctx, a),
        Cmd::CryptounitMkCommit(a) => {
            registers::run(&ctx, RegisterAction::Commit, &a.signers, false)
        }
        Cmd::CryptounitMkSetimm(a) => {
            registers::run(&ctx, RegisterAction::SetImmediate, &a.signers, a.yes)
        }
        Cmd::CryptounitMkClrnew(a) => {
            registers::run(&ctx, RegisterAction::ClearNew, &a.signers, false)
        }
        Cmd::CryptounitMkClrcur(a) => registers::run_guarded(
            &ctx,
            RegisterAction::ClearCurrent,
            &a.confirm.signers,
            a.confirm.yes,
            &a.force,
        ),
        Cmd::CryptounitZeroize(a) => zeroize::run(&ctx, a),
        Cmd::AutoInit(a) => auto_init::run(&ctx, a),
        Cmd::AutoRecover(a) => auto_recover::run(&ctx, a),
        Cmd::AutoMkRotate(a) => rotate::auto(&ctx, a),
        Cmd::CryptounitMkRotate(a) => rotate::key_parts(&ctx, a),
        Cmd::FailoverEnable(a) => failover::run(&ctx, a),
        Cmd::CryptounitAudit(a) => audit::run(&ctx, a),
        Cmd::Sigkeys => sigkeys::sigkeys(&ctx),
        Cmd::SigkeyAdd {
            name,
            pkcs11,
            yubikey,
        } => sigkeys::add(&ctx, name.as_deref(), pkcs11.as_deref(), yubikey),
        Cmd::SigkeyRm { nums, yes } => sigkeys::rm(&ctx, nums, *yes),
        Cmd::SigkeySel { nums, show, clear } => sigkeys::sel(&ctx, nums, *show, *clear),
        Cmd::Mks => keyparts::mks(&ctx),
        Cmd::MkAdd(a) => keyparts::add(&ctx, a),
        Cmd::MkRm(a) => keyparts::rm(&ctx, a),
        Cmd::Plan(c) => approvals::plan(&ctx, c),
        Cmd::Approve(a) => approvals::approve(&ctx, a),
        Cmd::Apply(a) => approvals::apply(&ctx, a),
        Cmd::Kms(c) => kms::run(&ctx, c),
        Cmd::Local(LocalCmd::Init(a)) => local::init(&ctx, a),
        Cmd::Target(TargetCmd::Add(a)) => targets::add(&ctx, a),
        Cmd::Target(TargetCmd::List) => targets::list(&ctx),
        Cmd::Target(TargetCmd::Rm { name }) => targets::rm(&ctx, name),
        Cmd::Help { command } => help(command),
    }
}

/// An error's text as it may reach a terminal: causes carry text from servers, so each
/// line has what could paint the screen escaped (a server's own line breaks were escaped
/// when its answer was decoded; the ones left are ours).
fn printable(text: &str) -> String {
    text.lines()
        .map(tke_client::untrusted::sanitize)
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> std::process::ExitCode {
    logging::init();
    let cli = Cli::parse();
    let files_dir = cli.files_dir.clone();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<Cancelled>() => std::process::ExitCode::from(3),
        Err(e) if e.is::<approvals::LacksApprovals>() => {
            eprintln!("FAILED\n{}", printable(&e.to_string()));
            std::process::ExitCode::from(4)
        }
        Err(e) => {
            // Network failures get the vendor's explanation (status code, message, advice).
            let files = tke_workstation::FilesDir::resolve(files_dir.as_deref()).ok();
            eprintln!(
                "FAILED\n{}",
                printable(&report::failure(&e, files.as_ref()))
            );
            std::process::ExitCode::FAILURE
        }
    }
}
