//! `tke-piv-vcard`: serves one virtual YubiKey to vsmartcard's virtual reader. Test
//! support only (see the crate's README).
#![forbid(unsafe_code)]

use std::{
    net::TcpStream,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use tke_piv_vcard::{vpcd, Card, CardConfig, TouchMode};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Touch {
    /// The holder touches at once.
    Auto,
    /// The holder never touches (operations that need a touch fail, `6982`).
    Timeout,
}

/// Serves a virtual YubiKey (PIV) to vsmartcard's virtual reader (vpcd) until killed.
#[derive(Parser, Debug)]
#[command(name = "tke-piv-vcard", version)]
struct Args {
    /// The card's serial number.
    #[arg(long, default_value_t = 12345678)]
    serial: u32,
    /// vpcd's host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// vpcd's port: 35963 for "Virtual PCD 00 00", 35964 for "Virtual PCD 00 01".
    #[arg(long, default_value_t = vpcd::VPCD_PORT)]
    port: u16,
    /// The firmware version to claim (MAJOR.MINOR.PATCH, major 4 or 5).
    #[arg(long, default_value = "5.4.3", value_parser = parse_version)]
    firmware: [u8; 3],
    /// A state file: loaded if it exists, saved after every command.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// What the holder does when a touch is needed.
    #[arg(long, value_enum, default_value_t = Touch::Auto)]
    touch: Touch,
    /// Give up when vpcd cannot be reached for this many seconds (0: keep trying).
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
}

fn parse_version(s: &str) -> Result<[u8; 3], String> {
    let parts: Vec<u8> = s
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not MAJOR.MINOR.PATCH"))?;
    match parts.as_slice() {
        [major @ (4 | 5), minor, patch] => Ok([*major, *minor, *patch]),
        [_, _, _] => Err("the major version must be 4 or 5".to_owned()),
        _ => Err(format!("{s:?} is not MAJOR.MINOR.PATCH")),
    }
}

fn connect(args: &Args) -> Option<TcpStream> {
    let start = Instant::now();
    loop {
        if let Ok(s) = TcpStream::connect((args.host.as_str(), args.port)) {
            return Some(s);
        }
        if args.connect_timeout != 0 && start.elapsed() > Duration::from_secs(args.connect_timeout)
        {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let touch = match args.touch {
        Touch::Auto => TouchMode::Auto,
        Touch::Timeout => TouchMode::Timeout,
    };
    let mut card = match &args.state {
        Some(p) if p.exists() => match Card::load(p, touch) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tke-piv-vcard: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => Card::new(CardConfig {
            serial: args.serial,
            version: args.firmware,
            touch,
        }),
    };
    loop {
        let Some(mut stream) = connect(&args) else {
            eprintln!(
                "tke-piv-vcard: nothing listens on {}:{}: is pcscd running with vsmartcard-vpcd? \
                 (ci/setup.sh installs it, ci/pcsc.sh starts pcscd)",
                args.host, args.port
            );
            return ExitCode::FAILURE;
        };
        eprintln!(
            "tke-piv-vcard: card {} (firmware {}.{}.{}) inserted at {}:{}",
            card.serial(),
            card.version()[0],
            card.version()[1],
            card.version()[2],
            args.host,
            args.port
        );
        let mut save_error = None;
        let served = vpcd::serve(&mut stream, &mut card, |c| {
            if let Some(p) = &args.state {
                if let Err(e) = c.save(p) {
                    save_error.get_or_insert(e);
                }
            }
        });
        if let Some(e) = save_error {
            eprintln!("tke-piv-vcard: {e}");
            return ExitCode::FAILURE;
        }
        if let Err(e) = served {
            eprintln!("tke-piv-vcard: connection lost: {e}");
        }
        // The reader went away (pcscd stopped): wait for it to come back.
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn options_are_consistent() {
        Args::command().debug_assert();
        assert_eq!(parse_version("5.7.1"), Ok([5, 7, 1]));
        assert!(parse_version("6.0.0").is_err());
        assert!(parse_version("5.4").is_err());
    }
}
