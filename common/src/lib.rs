//! Ordo's shared vocabulary.
//!
//! Everything more than one crate must agree on lives here: the ids of the Raft log
//! ([`NodeId`], [`Term`], [`LogIndex`], [`LogId`]), the [`Entry`] that the log stores, the
//! durable [`HardState`], the named limits, and the one module that knows the byte codec
//! ([`codec`]). Nothing here does I/O.

pub mod batch;
pub mod client;
pub mod codec;
pub mod coord;
pub mod engine;
pub mod errors;
pub mod limits;
mod log;
pub mod membership;

pub use engine::EngineKind;
pub use log::{Entry, EntryPayload, HardState, LogId, LogIndex, Membership, NodeId, Term};

/// Which cluster a node belongs to. Nodes refuse peers of another cluster, so that a cluster
/// restored from a backup (which gets a new identity) and the cluster it was taken from never
/// mix, even on the same addresses and certificates. Derived, never drawn: every node of a new
/// cluster computes the same one from the same configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    /// The identity of a cluster started fresh with these voters.
    pub fn initial(voters: impl IntoIterator<Item = NodeId>) -> Self {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        let mut hash = Fnv128::new(b"ordo cluster v1");
        for voter in voters {
            hash.write(&voter.to_le_bytes());
        }
        Self(hash.finish())
    }

    /// The identity of a cluster restored from `snapshot` (its bytes) with `token` (which
    /// tells apart two clusters restored from the same backup).
    pub fn restored(snapshot: &[u8], token: &str) -> Self {
        let mut hash = Fnv128::new(b"ordo restored cluster v1");
        hash.write(&(token.len() as u64).to_le_bytes());
        hash.write(token.as_bytes());
        hash.write(snapshot);
        Self(hash.finish())
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A client's identity as sessions record it: a digest of its certificate (DER), the same for
/// every connection made with that certificate.
pub fn certificate_identity(der: &[u8]) -> String {
    let mut hash = Fnv128::new(b"ordo client identity v1");
    hash.write(der);
    let digest = hash.finish();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("cert:{hex}")
}

/// 128-bit FNV-1a: enough to tell configurations apart (this is an identity, not a defence).
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    fn new(domain: &[u8]) -> Self {
        let mut hash = Self(Self::OFFSET);
        hash.write(&(domain.len() as u64).to_le_bytes());
        hash.write(domain);
        hash
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}
