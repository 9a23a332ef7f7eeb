//! Finding YubiKeys: every PC/SC reader is tried; a YubiKey is chosen by serial number.

use yubikey::{reader::Context, YubiKey};

use crate::{CardInfo, Serials, YubiKeyError};

/// What the readers hold.
struct Scan {
    cards: Vec<(YubiKey, CardInfo)>,
    busy: Vec<String>,
    readers: usize,
}

fn pcsc_of(e: &yubikey::Error) -> Option<pcsc::Error> {
    match e {
        yubikey::Error::PcscError { inner } => *inner,
        _ => None,
    }
}

fn scan() -> Result<Scan, YubiKeyError> {
    let mut ctx = match Context::open() {
        Ok(c) => c,
        Err(e) => match pcsc_of(&e) {
            // pcscd runs, but lists no reader.
            Some(pcsc::Error::NoReadersAvailable) => {
                return Ok(Scan {
                    cards: Vec::new(),
                    busy: Vec::new(),
                    readers: 0,
                })
            }
            Some(reason) => return Err(YubiKeyError::PcscUnavailable { reason }),
            None => {
                return Err(YubiKeyError::PcscUnavailable {
                    reason: pcsc::Error::NoService,
                })
            }
        },
    };
    let readers = match ctx.iter() {
        Ok(r) => r,
        Err(e) => match pcsc_of(&e) {
            Some(pcsc::Error::NoReadersAvailable) => {
                return Ok(Scan {
                    cards: Vec::new(),
                    busy: Vec::new(),
                    readers: 0,
                })
            }
            Some(reason) => return Err(YubiKeyError::PcscUnavailable { reason }),
            None => {
                return Err(YubiKeyError::PcscUnavailable {
                    reason: pcsc::Error::NoService,
                })
            }
        },
    };
    let mut scan = Scan {
        cards: Vec::new(),
        busy: Vec::new(),
        readers: 0,
    };
    for reader in readers {
        scan.readers += 1;
        let name = reader.name().into_owned();
        match reader.open() {
            Ok(yk) => {
                let v = yk.version();
                let info = CardInfo {
                    serial: yk.serial().0,
                    version: [v.major, v.minor, v.patch],
                    reader: name,
                };
                log::debug!("found {info}");
                scan.cards.push((yk, info));
            }
            Err(e) if pcsc_of(&e) == Some(pcsc::Error::SharingViolation) => {
                log::debug!("reader {name:?} is held exclusively by another program");
                scan.busy.push(name);
            }
            // An empty reader, or a card that is not a PIV card.
            Err(e) => log::debug!("reader {name:?}: no YubiKey ({e})"),
        }
    }
    Ok(scan)
}

/// Releases a YubiKey we do not want without resetting it (a reset would disturb other
/// programs, and our own other handles, using the card).
fn release(yk: YubiKey) {
    let _ = yk.disconnect(pcsc::Disposition::LeaveCard);
}

/// The YubiKeys attached (that no other program holds exclusively).
///
/// # Errors
/// [`YubiKeyError::PcscUnavailable`] when pcscd does not answer.
pub fn list() -> Result<Vec<CardInfo>, YubiKeyError> {
    let scan = scan()?;
    Ok(scan
        .cards
        .into_iter()
        .map(|(yk, info)| {
            release(yk);
            info
        })
        .collect())
}

/// Opens the YubiKey with serial number `serial`, or the only one attached.
pub(crate) fn open(serial: Option<u32>) -> Result<(YubiKey, CardInfo), YubiKeyError> {
    let scan = scan()?;
    let present = Serials(scan.cards.iter().map(|(_, i)| i.serial).collect());
    let mut chosen = None;
    for (yk, info) in scan.cards {
        let wanted = match serial {
            Some(s) => info.serial == s,
            None => present.0.len() == 1,
        };
        if wanted && chosen.is_none() {
            chosen = Some((yk, info));
        } else {
            release(yk);
        }
    }
    if let Some(c) = chosen {
        return Ok(c);
    }
    if !scan.busy.is_empty() && (serial.is_some() || present.0.is_empty()) {
        return Err(YubiKeyError::ReaderBusy { readers: scan.busy });
    }
    Err(match serial {
        Some(serial) => YubiKeyError::NotFound { serial, present },
        None if present.0.is_empty() => YubiKeyError::NoCard {
            readers: scan.readers,
        },
        None => YubiKeyError::Several { present },
    })
}
