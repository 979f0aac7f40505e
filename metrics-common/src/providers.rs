//! Provider slots and the address key the kernel matches at `connect`.

/// Provider slots; the last one is `other` (upstreams matching no provider).
pub const MAX_PROVIDERS: u32 = 32;
pub const PROVIDER_OTHER: u32 = MAX_PROVIDERS - 1;

/// Key of `PROVIDER_ADDRS`: an IPv6 address (IPv4 as `::ffff:a.b.c.d`) and
/// a port in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderAddr {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<ProviderAddr>() == 24);

impl ProviderAddr {
    pub const fn new(addr: [u8; 16], port: u16) -> Self {
        Self { addr, port, _pad: [0; 6] }
    }

    /// The IPv4-mapped IPv6 form of an IPv4 address.
    pub const fn v4(octets: [u8; 4], port: u16) -> Self {
        let [a, b, c, d] = octets;
        Self::new([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d], port)
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProviderAddr {}
