//! vsmartcard's virtual reader protocol, card side. The virtual reader (`vpcd`, a pcscd
//! driver) listens on a TCP port (35963 for the first reader); a virtual card connects to
//! it, which inserts the card. Every frame is a 2-byte big-endian length, then the
//! payload. A 1-byte payload is a control: 0 power off, 1 power on, 2 reset, 4 send the
//! ATR (the answer is a frame holding the ATR). Any other payload is a command APDU,
//! answered by a frame holding the response APDU. Closing the connection removes the card.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
};

use crate::Card;

/// The TCP port of vpcd's first virtual reader ("Virtual PCD 00 00"); reader `n` listens
/// on `VPCD_PORT + n`.
pub const VPCD_PORT: u16 = 35963;

const CTRL_OFF: u8 = 0;
const CTRL_ON: u8 = 1;
const CTRL_RESET: u8 = 2;
const CTRL_ATR: u8 = 4;

fn read_frame(stream: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn write_frame(stream: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u16::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame longer than 65535"))?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)?;
    stream.flush()
}

/// Serves `card` on a connection to vpcd until the reader closes it (or the connection is
/// shut down from another thread). `after_command` runs after each APDU (to persist the
/// state, for instance).
///
/// # Errors
/// The connection's I/O errors (a shutdown from this side ends the loop with `Ok`).
pub fn serve(
    stream: &mut TcpStream,
    card: &mut Card,
    mut after_command: impl FnMut(&Card),
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let frame = match read_frame(stream) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            // A shutdown from our side, or the reader gone.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::NotConnected
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        match frame.as_slice() {
            [CTRL_OFF] => card.power_off(),
            [CTRL_ON] => card.power_on(),
            [CTRL_RESET] => card.reset(),
            [CTRL_ATR] => write_frame(stream, &card.atr())?,
            [_] => {}
            apdu => {
                let response = card.transmit(apdu);
                write_frame(stream, &response)?;
                after_command(card);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::CardConfig;
    use std::net::TcpListener;

    /// Plays vpcd's side over a real socket.
    #[test]
    fn speaks_the_vpcd_framing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let card_thread = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut card = Card::new(CardConfig::new(4242));
            let mut n = 0;
            serve(&mut s, &mut card, |_| n += 1).unwrap();
            n
        });
        let (mut reader, _) = listener.accept().unwrap();
        write_frame(&mut reader, &[CTRL_ON]).unwrap();
        write_frame(&mut reader, &[CTRL_ATR]).unwrap();
        let atr = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(&atr[..2], &[0x3b, 0xfd]);
        write_frame(
            &mut reader,
            &[0x00, 0xa4, 0x04, 0x00, 0x05, 0xa0, 0, 0, 3, 8],
        )
        .unwrap();
        let r = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
        write_frame(&mut reader, &[0x00, 0xf8, 0x00, 0x00]).unwrap();
        let r = read_frame(&mut reader).unwrap().unwrap();
        assert_eq!(r, [0, 0, 0x10, 0x92, 0x90, 0x00]);
        drop(reader);
        assert_eq!(card_thread.join().unwrap(), 2);
    }
}
