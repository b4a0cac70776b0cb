//! Reading and writing IKE wire structures (rustls codec style).
//!
//! [`Reader`] is a shrinking slice that cannot read past its end; nested
//! structures get a child reader bounded by their length field
//! ([`Reader::sub`]), so a bad inner length can never reach into the parent's
//! bytes. [`LengthPrefixed`] writes a structure whose length field is only
//! known after its contents are written, in one pass.

use std::ops::{Deref, DerefMut};

use crate::error::DecodeError;

/// A cursor over received bytes. Every read either returns whole data or an
/// error naming what was truncated; nothing here panics.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Takes the next `n` bytes, or `None` (and leaves the reader unchanged)
    /// when fewer are left.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    /// [`Reader::take`] with an error naming the truncated structure.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        self.take(n).ok_or(DecodeError::TooShort { what })
    }

    pub fn take_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::TooShort { what })?;
        self.buf = tail;
        Ok(*head)
    }

    /// A child reader over the next `n` bytes; this reader moves past them.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        self.bytes(n, what).map(Reader::new)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take_array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.take_array(what).map(u16::from_be_bytes)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.take_array(what).map(u32::from_be_bytes)
    }

    /// Everything that is left; the reader is empty afterwards.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// The bytes not yet read, without consuming them.
    pub fn peek_rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn left(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails with [`DecodeError::Trailing`] unless everything was read.
    pub fn expect_empty(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(what))
        }
    }
}

/// A wire structure: `encode` appends it, `read` parses it from a reader
/// that the caller has already bounded to the structure's extent where the
/// wire format gives one.
pub trait Codec<'a>: Sized {
    fn encode(&self, out: &mut Vec<u8>);
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError>;

    /// Parses `bytes` as exactly one `Self`; leftover bytes are an error.
    fn read_bytes(bytes: &'a [u8], what: &'static str) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.expect_empty(what)?;
        Ok(v)
    }

    fn get_encoding(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Width of a length field patched by [`LengthPrefixed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthWidth {
    U16,
    U32,
}

/// Writes a structure whose length field counts the whole structure from its
/// first byte (IKE header, generic payload header, proposal, transform,
/// traffic selector). Create it before writing the structure's first byte;
/// write the header with a placeholder where the length goes; on drop the
/// length field at `len_offset` is set to the number of bytes written since.
///
/// A structure longer than the field can hold gets the field's maximum
/// (only possible for payloads > 64 KiB, which IKE over UDP cannot carry).
pub struct LengthPrefixed<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    len_offset: usize,
    width: LengthWidth,
}

impl<'a> LengthPrefixed<'a> {
    pub fn new(buf: &'a mut Vec<u8>, len_offset: usize, width: LengthWidth) -> LengthPrefixed<'a> {
        let start = buf.len();
        LengthPrefixed {
            buf,
            start,
            len_offset,
            width,
        }
    }

    /// Offset in the underlying buffer where this structure starts.
    pub fn start(&self) -> usize {
        self.start
    }
}

impl Deref for LengthPrefixed<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        self.buf
    }
}

impl DerefMut for LengthPrefixed<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        self.buf
    }
}

impl Drop for LengthPrefixed<'_> {
    fn drop(&mut self) {
        let len = self.buf.len().saturating_sub(self.start);
        let at = self.start + self.len_offset;
        match self.width {
            LengthWidth::U16 => {
                debug_assert!(
                    len <= u16::MAX as usize,
                    "structure too long for u16 length"
                );
                let v = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
                if let Some(field) = self.buf.get_mut(at..at + 2) {
                    field.copy_from_slice(&v);
                }
            }
            LengthWidth::U32 => {
                let v = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
                if let Some(field) = self.buf.get_mut(at..at + 4) {
                    field.copy_from_slice(&v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_overruns() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(4), None);
        assert_eq!(r.left(), 3, "failed take leaves the reader unchanged");
        assert_eq!(r.u16("x"), Ok(0x0102));
        assert_eq!(r.u16("y"), Err(DecodeError::TooShort { what: "y" }));
        assert_eq!(r.u8("z"), Ok(3));
        assert!(r.is_empty());
        assert_eq!(r.u32("w"), Err(DecodeError::TooShort { what: "w" }));
    }

    #[test]
    fn sub_is_bounded() {
        let data = [0, 0, 0, 7, 9, 9];
        let mut r = Reader::new(&data);
        let mut child = r.sub(4, "child").unwrap();
        assert_eq!(child.u32("v"), Ok(7));
        assert_eq!(
            child.u8("past"),
            Err(DecodeError::TooShort { what: "past" })
        );
        assert_eq!(r.rest(), &[9, 9]);
        assert!(Reader::new(&[1]).sub(2, "s").is_err());
        assert_eq!(
            Reader::new(&[1]).expect_empty("t"),
            Err(DecodeError::Trailing("t"))
        );
    }

    #[test]
    fn length_prefixed_patches_nested_lengths() {
        let mut out = vec![0xaa];
        {
            let mut outer = LengthPrefixed::new(&mut out, 2, LengthWidth::U16);
            outer.extend_from_slice(&[1, 0, 0, 0]);
            {
                let mut inner = LengthPrefixed::new(&mut outer, 0, LengthWidth::U32);
                inner.extend_from_slice(&[0, 0, 0, 0, 5]);
            }
        }
        assert_eq!(out, [0xaa, 1, 0, 0, 9, 0, 0, 0, 5, 5]);
    }
}
