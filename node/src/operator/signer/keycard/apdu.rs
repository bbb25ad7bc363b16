//! ISO 7816-4 short APDUs and the BER-TLV the Keycard answers with.

/// A command APDU (short form: at most 255 data bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
}

impl Command {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Self {
        Command {
            cla,
            ins,
            p1,
            p2,
            data,
        }
    }

    /// `CLA INS P1 P2 [Lc data] Le=00` (Le 00: up to 256 bytes back).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.cla, self.ins, self.p1, self.p2];
        if !self.data.is_empty() {
            out.push(self.data.len() as u8);
            out.extend_from_slice(&self.data);
        }
        out.push(0x00);
        out
    }
}

/// A response APDU: data and the status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: u16,
}

impl Response {
    /// Splits `data || SW1 SW2`; `None` if shorter than two bytes.
    pub fn parse(raw: &[u8]) -> Option<Response> {
        let split = raw.len().checked_sub(2)?;
        let (data, sw) = raw.split_at(split);
        Some(Response {
            data: data.to_vec(),
            sw: u16::from_be_bytes([sw[0], sw[1]]),
        })
    }

    pub fn is_ok(&self) -> bool {
        self.sw == SW_OK
    }
}

pub const SW_OK: u16 = 0x9000;
pub const SW_SECURITY_STATUS_NOT_SATISFIED: u16 = 0x6982;
pub const SW_CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
pub const SW_WRONG_DATA: u16 = 0x6A80;
pub const SW_FILE_NOT_FOUND: u16 = 0x6A82;
pub const SW_FILE_FULL: u16 = 0x6A84;
pub const SW_INCORRECT_P1P2: u16 = 0x6A86;
pub const SW_INS_NOT_SUPPORTED: u16 = 0x6D00;

/// What a status word means, for error messages.
pub fn describe_sw(sw: u16) -> &'static str {
    match sw {
        SW_OK => "success",
        SW_SECURITY_STATUS_NOT_SATISFIED => "security status not satisfied",
        SW_CONDITIONS_NOT_SATISFIED => "conditions of use not satisfied",
        SW_WRONG_DATA => "wrong data",
        SW_FILE_NOT_FOUND => "application not found",
        SW_FILE_FULL => "no space left",
        SW_INCORRECT_P1P2 => "incorrect parameters P1/P2",
        0x6A88 => "referenced data not found",
        SW_INS_NOT_SUPPORTED => "instruction not supported",
        0x6E00 => "class not supported",
        _ if sw & 0xFFF0 == 0x63C0 => "verification failed",
        _ => "unknown status",
    }
}

/// One BER-TLV element: tag and value (tags are one byte in the Keycard protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

/// Reads one TLV from the front of `input`, returning it and the rest. Handles the short
/// length form and the long forms `81 LL` and `82 LL LL`.
pub fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0x00..=0x7F => (usize::from(first), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let (l, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), rest)
        }
        _ => return None,
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((Tlv { tag, value }, rest))
}

/// All TLVs in `input` (stops at the first malformed one).
pub fn read_all(mut input: &[u8]) -> Vec<Tlv<'_>> {
    let mut out = Vec::new();
    while let Some((tlv, rest)) = read_tlv(input) {
        out.push(tlv);
        input = rest;
    }
    out
}

/// The value of the first TLV tagged `tag` in `input`.
pub fn find(input: &[u8], tag: u8) -> Option<&[u8]> {
    read_all(input)
        .into_iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_serialise_in_short_form() {
        let c = Command::new(0x00, 0xA4, 0x04, 0x00, vec![1, 2, 3]);
        assert_eq!(c.to_bytes(), vec![0x00, 0xA4, 0x04, 0x00, 3, 1, 2, 3, 0]);
        let c = Command::new(0x80, 0xF2, 0, 0, vec![]);
        assert_eq!(c.to_bytes(), vec![0x80, 0xF2, 0, 0, 0]);
    }

    #[test]
    fn responses_split_data_and_status() {
        let r = Response::parse(&[1, 2, 0x90, 0x00]).unwrap();
        assert_eq!(r.data, vec![1, 2]);
        assert!(r.is_ok());
        assert_eq!(Response::parse(&[0x63, 0xC2]).unwrap().sw, 0x63C2);
        assert!(Response::parse(&[0x90]).is_none());
    }

    #[test]
    fn tlv_lengths_in_every_form() {
        let short = [0x80, 2, 0xAA, 0xBB, 0x81, 1, 0xCC];
        let all = read_all(&short);
        assert_eq!(all.len(), 2);
        assert_eq!(find(&short, 0x81), Some(&[0xCC][..]));
        let mut long = vec![0xA4, 0x81, 130];
        long.extend(std::iter::repeat_n(7u8, 130));
        let (tlv, rest) = read_tlv(&long).unwrap();
        assert_eq!((tlv.tag, tlv.value.len(), rest.len()), (0xA4, 130, 0));
        let mut longer = vec![0x30, 0x82, 0x01, 0x00];
        longer.extend(std::iter::repeat_n(1u8, 256));
        assert_eq!(read_tlv(&longer).unwrap().0.value.len(), 256);
        // Truncated values are not read past the end.
        assert!(read_tlv(&[0x80, 5, 1, 2]).is_none());
        assert!(read_tlv(&[0x80, 0x83, 0, 0, 1]).is_none());
    }
}
