//! Bounded big-endian primitives for the metadata codecs (records and image
//! snapshots). Every length is checked against its limit when written,
//! so we never write what we would refuse to read, and against the bytes left
//! when read, before anything is allocated.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use uuid::Uuid;

use super::error::CodecError;

/// Appends encoded fields to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub(crate) fn bool(&mut self, value: bool) {
        self.bytes.push(u8::from(value));
    }
    pub(crate) fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn uuid(&mut self, value: &Uuid) {
        self.bytes.extend_from_slice(value.as_bytes());
    }

    /// A length prefix: u16 when `max` fits one, else u32. The width follows
    /// from the limit, so moving a limit across 65 535 changes the layout and
    /// needs a new record version.
    pub(crate) fn length(
        &mut self,
        what: &'static str,
        len: usize,
        max: usize,
    ) -> Result<(), CodecError> {
        if len > max {
            return Err(CodecError::TooLong { what, len, max });
        }
        match u16::try_from(max) {
            Ok(_) => self.u16(len as u16),
            Err(_) => self.u32(u32::try_from(len).map_err(|_| CodecError::TooLong {
                what,
                len,
                max: u32::MAX as usize,
            })?),
        }
        Ok(())
    }

    pub(crate) fn string(
        &mut self,
        what: &'static str,
        value: &str,
        max: usize,
    ) -> Result<(), CodecError> {
        self.length(what, value.len(), max)?;
        self.bytes.extend_from_slice(value.as_bytes());
        Ok(())
    }

    pub(crate) fn opt_string(
        &mut self,
        what: &'static str,
        value: Option<&str>,
        max: usize,
    ) -> Result<(), CodecError> {
        self.bool(value.is_some());
        match value {
            Some(text) => self.string(what, text, max),
            None => Ok(()),
        }
    }

    pub(crate) fn i32_list(
        &mut self,
        what: &'static str,
        values: &[i32],
        max: usize,
    ) -> Result<(), CodecError> {
        self.length(what, values.len(), max)?;
        values.iter().for_each(|value| self.i32(*value));
        Ok(())
    }

    /// Key and value limits come from `limits`: (entries, key bytes, value bytes).
    pub(crate) fn string_map(
        &mut self,
        what: &'static str,
        map: &BTreeMap<String, String>,
        limits: (usize, usize, usize),
    ) -> Result<(), CodecError> {
        self.length(what, map.len(), limits.0)?;
        for (key, value) in map {
            self.string(what, key, limits.1)?;
            self.string(what, value, limits.2)?;
        }
        Ok(())
    }

    /// Tag 4 or 6, the address, the port; IPv6 keeps flow info and scope id.
    pub(crate) fn socket_addr(&mut self, value: &SocketAddr) {
        match value {
            SocketAddr::V4(v4) => {
                self.u8(4);
                self.bytes.extend_from_slice(&v4.ip().octets());
                self.u16(v4.port());
            }
            SocketAddr::V6(v6) => {
                self.u8(6);
                self.bytes.extend_from_slice(&v6.ip().octets());
                self.u16(v6.port());
                self.u32(v6.flowinfo());
                self.u32(v6.scope_id());
            }
        }
    }
}

/// Reads fields off a slice; every read names what it reads for the error.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn take(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < len {
            return Err(CodecError::Truncated {
                what,
                needed: len,
                left: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(self.take(what, N)?);
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CodecError::InvalidValue {
                what,
                value: i64::from(other),
            }),
        }
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        self.array(what).map(u16::from_be_bytes)
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        self.array(what).map(u32::from_be_bytes)
    }
    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, CodecError> {
        self.array(what).map(i32::from_be_bytes)
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        self.array(what).map(u64::from_be_bytes)
    }
    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, CodecError> {
        self.array(what).map(i64::from_be_bytes)
    }
    pub(crate) fn uuid(&mut self, what: &'static str) -> Result<Uuid, CodecError> {
        self.array(what).map(Uuid::from_bytes)
    }

    /// A length prefix as `Writer::length` writes it, checked against `max`
    /// and against the bytes left (at `unit_bytes` each) before use.
    pub(crate) fn length(
        &mut self,
        what: &'static str,
        max: usize,
        unit_bytes: usize,
    ) -> Result<usize, CodecError> {
        let len = match u16::try_from(max) {
            Ok(_) => usize::from(self.u16(what)?),
            Err(_) => self.u32(what)? as usize,
        };
        if len > max {
            return Err(CodecError::TooLong { what, len, max });
        }
        let needed = len.saturating_mul(unit_bytes);
        if needed > self.rest.len() {
            return Err(CodecError::Truncated {
                what,
                needed,
                left: self.rest.len(),
            });
        }
        Ok(len)
    }

    pub(crate) fn string(&mut self, what: &'static str, max: usize) -> Result<String, CodecError> {
        let len = self.length(what, max, 1)?;
        let bytes = self.take(what, len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| CodecError::InvalidUtf8 { what })
    }

    pub(crate) fn opt_string(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Option<String>, CodecError> {
        match self.bool(what)? {
            true => self.string(what, max).map(Some),
            false => Ok(None),
        }
    }

    pub(crate) fn i32_list(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Vec<i32>, CodecError> {
        let len = self.length(what, max, 4)?;
        let mut values = Vec::with_capacity(len);
        for _ in 0..len {
            values.push(self.i32(what)?);
        }
        Ok(values)
    }

    /// A map written by `Writer::string_map`; a key written twice is refused.
    pub(crate) fn string_map(
        &mut self,
        what: &'static str,
        limits: (usize, usize, usize),
    ) -> Result<BTreeMap<String, String>, CodecError> {
        // Each entry is at least two empty strings' prefixes.
        let len = self.length(what, limits.0, 4)?;
        let mut map = BTreeMap::new();
        for _ in 0..len {
            let key = self.string(what, limits.1)?;
            let value = self.string(what, limits.2)?;
            if map.contains_key(&key) {
                return Err(CodecError::DuplicateKey { what, key });
            }
            map.insert(key, value);
        }
        Ok(map)
    }

    pub(crate) fn socket_addr(&mut self, what: &'static str) -> Result<SocketAddr, CodecError> {
        match self.u8(what)? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>(what)?);
                Ok(SocketAddr::V4(SocketAddrV4::new(ip, self.u16(what)?)))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>(what)?);
                let port = self.u16(what)?;
                let flowinfo = self.u32(what)?;
                let scope_id = self.u32(what)?;
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    ip, port, flowinfo, scope_id,
                )))
            }
            tag => Err(CodecError::InvalidValue {
                what,
                value: i64::from(tag),
            }),
        }
    }

    /// Refuses bytes left after `what`.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), CodecError> {
        match self.rest.len() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { what, count }),
        }
    }
}
