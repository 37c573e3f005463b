//! # ordo-net: what nodes and clients share at the edge where bytes meet the world
//!
//! - [`tls`]: the TLS file layout `ordo certs` writes, loading it, and the rustls configurations
//!   both sides build from it (mutual TLS, TLS 1.3, the `ring` provider).
//! - [`wire`]: length-prefixed, versioned frames over any async stream, with every length
//!   checked against a named limit before anything is allocated.
//!
//! These live apart from `ordo-common` so that the consensus core, which depends on
//! `ordo-common`, reaches no async runtime and no TLS stack, even transitively.

pub mod tls;
pub mod wire;

/// The local address a client binds to reach `remote`: any port on the unspecified address of
/// the same family.
pub fn client_bind_address(remote: std::net::SocketAddr) -> std::net::SocketAddr {
    let unspecified: std::net::IpAddr = if remote.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    std::net::SocketAddr::new(unspecified, 0)
}
