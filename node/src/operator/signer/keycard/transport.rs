//! How APDUs reach a card: [`Transport`], implemented over PC/SC ([`PcscTransport`]).

use std::ffi::CString;

use super::Error;

/// Sends one command APDU and returns the raw response (data || SW1 SW2).
pub trait Transport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error>;
}

/// A card in a PC/SC reader, reached through pcscd.
pub struct PcscTransport {
    card: pcsc::Card,
    reader: String,
    _context: pcsc::Context,
}

impl PcscTransport {
    /// Connects to the card in the reader whose name contains `reader` (any reader with a card
    /// when `reader` is empty).
    pub fn connect(reader: &str) -> Result<PcscTransport, Error> {
        let context = pcsc::Context::establish(pcsc::Scope::User).map_err(|e| match e {
            pcsc::Error::NoService
            | pcsc::Error::ServiceStopped
            | pcsc::Error::NoReadersAvailable => Error::NoService,
            other => Error::Pcsc(format!("cannot talk to pcscd: {other}")),
        })?;
        let readers = match context.list_readers_owned() {
            Ok(readers) => readers,
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(pcsc::Error::NoService | pcsc::Error::ServiceStopped) => {
                return Err(Error::NoService)
            }
            Err(e) => return Err(Error::Pcsc(format!("cannot list readers: {e}"))),
        };
        if readers.is_empty() {
            return Err(Error::NoReaders);
        }
        let names: Vec<String> = readers
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        let candidates: Vec<&CString> = readers
            .iter()
            .zip(&names)
            .filter(|(_, name)| reader.is_empty() || name.contains(reader))
            .map(|(r, _)| r)
            .collect();
        if candidates.is_empty() {
            return Err(Error::ReaderNotFound {
                wanted: reader.to_owned(),
                present: names.join(", "),
            });
        }
        let mut absent = Vec::new();
        for candidate in candidates {
            let name = candidate.to_string_lossy().into_owned();
            match context.connect(candidate, pcsc::ShareMode::Shared, pcsc::Protocols::ANY) {
                Ok(card) => {
                    return Ok(PcscTransport {
                        card,
                        reader: name,
                        _context: context,
                    })
                }
                Err(
                    pcsc::Error::NoSmartcard
                    | pcsc::Error::RemovedCard
                    | pcsc::Error::UnpoweredCard
                    | pcsc::Error::UnresponsiveCard,
                ) => absent.push(name),
                Err(pcsc::Error::NoService | pcsc::Error::ServiceStopped) => {
                    return Err(Error::NoService)
                }
                Err(e) => {
                    return Err(Error::Pcsc(format!(
                        "cannot connect to the card in reader `{name}`: {e}"
                    )))
                }
            }
        }
        Err(Error::CardAbsent(absent.join(", ")))
    }

    pub fn reader(&self) -> &str {
        &self.reader
    }
}

impl Transport for PcscTransport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buffer = [0u8; pcsc::MAX_BUFFER_SIZE];
        let mut response = self
            .card
            .transmit(apdu, &mut buffer)
            .map_err(|e| transmit_error(e, &self.reader))?
            .to_vec();
        // T=0 readers: 6C XX = "resend with Le XX"; 61 XX = "XX more bytes: GET RESPONSE".
        if let [.., 0x6C, le] = response[..] {
            let mut again = apdu.to_vec();
            if let Some(last) = again.last_mut() {
                *last = le;
            }
            response = self
                .card
                .transmit(&again, &mut buffer)
                .map_err(|e| transmit_error(e, &self.reader))?
                .to_vec();
        }
        let mut data = Vec::new();
        while let [.., 0x61, more] = response[..] {
            data.extend_from_slice(&response[..response.len() - 2]);
            response = self
                .card
                .transmit(&[0x00, 0xC0, 0x00, 0x00, more], &mut buffer)
                .map_err(|e| transmit_error(e, &self.reader))?
                .to_vec();
        }
        data.extend_from_slice(&response);
        // Every answer ends with a status word; no bytes at all means the card is gone (vpcd,
        // for one, reports a vanished card as an empty answer).
        if response.len() < 2 {
            return Err(Error::CardRemoved(self.reader.clone()));
        }
        Ok(data)
    }
}

fn transmit_error(e: pcsc::Error, reader: &str) -> Error {
    match e {
        pcsc::Error::RemovedCard
        | pcsc::Error::ResetCard
        | pcsc::Error::NoSmartcard
        | pcsc::Error::UnpoweredCard
        | pcsc::Error::UnresponsiveCard
        | pcsc::Error::CommError
        | pcsc::Error::NotTransacted
        | pcsc::Error::ReaderUnavailable
        | pcsc::Error::UnknownReader => Error::CardRemoved(reader.to_owned()),
        pcsc::Error::NoService | pcsc::Error::ServiceStopped => Error::NoService,
        other => Error::Pcsc(format!("exchange with the card failed: {other}")),
    }
}
