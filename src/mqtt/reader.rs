//! The bounds-checked cursor the MQTT decoder reads a packet's variable
//! header and payload with: MQTT's primitive types (integers, variable
//! byte integers, UTF-8 strings, binary data, string pairs) and property
//! lists, each failing with the [`DecodeError`] that names what was wrong.
//!
//! Owns: reading primitives from one packet body. Must never: read past the
//! packet it was given, or decide what a packet means (`decode` does).

use super::packet::*;
use super::primitives::{parse_varint, prop, DecodeError};
use bytes::{Buf, Bytes};

type Result<T> = std::result::Result<T, DecodeError>;

/// Bounds-checked reader over one packet's variable header and payload.
pub(super) struct Reader {
    pub(super) buf: Bytes,
    pub(super) packet: &'static str,
}

impl Reader {
    pub(super) fn eof(&self) -> DecodeError {
        DecodeError::UnexpectedEof(self.packet)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        if self.buf.is_empty() {
            return Err(self.eof());
        }
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self) -> Result<u16> {
        if self.buf.len() < 2 {
            return Err(self.eof());
        }
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        if self.buf.len() < 4 {
            return Err(self.eof());
        }
        Ok(self.buf.get_u32())
    }

    pub(super) fn varint(&mut self) -> Result<u32> {
        match parse_varint(&self.buf)? {
            Some((v, n)) => {
                self.buf.advance(n);
                Ok(v)
            }
            None => Err(self.eof()),
        }
    }

    pub(super) fn bytes(&mut self, n: usize) -> Result<Bytes> {
        if self.buf.len() < n {
            return Err(self.eof());
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary Data (§1.5.6): two-byte length then bytes.
    pub(super) fn binary(&mut self) -> Result<Bytes> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// UTF-8 Encoded String (§1.5.4): valid UTF-8 (which excludes the
    /// surrogates U+D800..U+DFFF) without U+0000. Other control characters
    /// and non-characters are allowed ("SHOULD NOT", left to the broker).
    pub(super) fn string(&mut self) -> Result<String> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(s.to_owned())
    }

    /// UTF-8 String Pair (§1.5.7).
    pub(super) fn pair(&mut self) -> Result<(String, String)> {
        Ok((self.string()?, self.string()?))
    }

    pub(super) fn packet_id(&mut self) -> Result<u16> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId(self.packet)),
            id => Ok(id),
        }
    }

    /// Everything left.
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Splits off the next `n` bytes as their own reader.
    pub(super) fn take(&mut self, n: usize) -> Result<Reader> {
        Ok(Reader { buf: self.bytes(n)?, packet: self.packet })
    }

    pub(super) fn finish(&self) -> Result<()> {
        match self.buf.len() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { packet: self.packet, extra }),
        }
    }

    // ---- property helpers ----

    /// Stores a single-valued property, rejecting a duplicate.
    pub(super) fn set<T>(&self, slot: &mut Option<T>, id: u8, value: T) -> Result<()> {
        if slot.is_some() {
            return Err(DecodeError::DuplicateProperty { packet: self.packet, id });
        }
        *slot = Some(value);
        Ok(())
    }

    /// A Byte property whose only legal values are 0 and 1.
    pub(super) fn bool_byte(&mut self, id: u8) -> Result<u8> {
        match self.u8()? {
            v @ (0 | 1) => Ok(v),
            v => Err(DecodeError::InvalidPropertyValue { id, value: u32::from(v) }),
        }
    }

    pub(super) fn nonzero_u16(&mut self, id: u8) -> Result<u16> {
        match self.u16()? {
            0 => Err(DecodeError::InvalidPropertyValue { id, value: 0 }),
            v => Ok(v),
        }
    }

    pub(super) fn nonzero_u32(&mut self, id: u8) -> Result<u32> {
        match self.u32()? {
            0 => Err(DecodeError::InvalidPropertyValue { id, value: 0 }),
            v => Ok(v),
        }
    }

    pub(super) fn subscription_identifier(&mut self) -> Result<u32> {
        match self.varint()? {
            0 => Err(DecodeError::InvalidPropertyValue { id: prop::SUBSCRIPTION_IDENTIFIER, value: 0 }),
            v => Ok(v),
        }
    }

    pub(super) fn not_allowed(&self, id: u8) -> DecodeError {
        if prop::is_known(id) {
            DecodeError::PropertyNotAllowed { packet: self.packet, id }
        } else {
            DecodeError::UnknownProperty(id)
        }
    }

    /// Reads a property block (§2.2.2): length, then `(id, value)` entries,
    /// each handed to `f`, which reads the value and rejects ids not allowed
    /// in this packet.
    pub(super) fn properties(&mut self, mut f: impl FnMut(u8, &mut Reader) -> Result<()>) -> Result<()> {
        let len = self.varint()? as usize;
        let mut block = self.take(len)?;
        while !block.is_empty() {
            // The identifier is a Variable Byte Integer, but every defined
            // one is below 0x80: a first byte >= 0x80 is unknown either way.
            let id = block.u8()?;
            f(id, &mut block)?;
        }
        Ok(())
    }
}

/// Shared by the user-property-only property handlers.
pub(super) fn user_property(r: &mut Reader, id: u8, out: &mut UserProperties) -> Result<()> {
    if id != prop::USER_PROPERTY {
        return Err(r.not_allowed(id));
    }
    out.push(r.pair()?);
    Ok(())
}
