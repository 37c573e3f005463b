//! Authorization by certificate identity: which client may do what, from the node's `[auth]`
//! section.
//!
//! Every client connection is mutually authenticated, so the node knows the caller's
//! certificate. Its identity is the `NAME` of a client certificate issued as
//! `ordo certs --clients NAME` (its DNS name is `client-NAME.ordo`). A certificate naming a
//! node (`node-N.ordo`) belongs to a coordinator, which may not act as a client: it may only
//! greet and ask for the member list, which a node joining a cluster needs.
//!
//! ```toml
//! [auth]
//! admins = ["ops"]                  # identities allowed admin operations
//! [[auth.acl]]
//! identity = "orders-svc"
//! write = ["orders", "audit.*"]     # topics it may write: exact names, or prefixes ending in `*`
//! read = ["orders", "payments.*"]   # topics it may subscribe to
//! locks = ["orders.*"]              # lock and election names it may use
//! ```
//!
//! Without an `[auth]` section every client certificate the cluster's CA signed may do
//! everything (the node warns at start): the right mode for `ordo dev` and for a cluster whose
//! CA issues certificates only to fully trusted services. With one, an identity may do only what
//! its rules grant, and an admin everything.

use std::collections::BTreeMap;

use ordo_common::batch::Precondition;
use ordo_common::client::ClientRequest;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

/// The `[auth]` section of a node's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Identities allowed everything, admin operations included.
    #[serde(default)]
    pub admins: Vec<String>,
    /// What each other identity may do.
    #[serde(default)]
    pub acl: Vec<AclRule>,
}

/// One identity's grants (`[[auth.acl]]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    pub identity: String,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub locks: Vec<String>,
}

/// Longest identity name (as `ordo certs` issues them).
pub const IDENTITY_NAME_BYTES_MAX: usize = 64;
/// Most patterns in one of a rule's lists.
pub const RULE_PATTERNS_MAX: usize = 1024;

/// Who is calling, from the leaf certificate of a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A coordinator's certificate (`node-N.ordo`).
    Node(u64),
    /// A client certificate: `Some(NAME)` for `client-NAME.ordo`, `None` for a certificate of
    /// the cluster's CA that names neither (it matches no rule).
    Client(Option<String>),
}

impl Caller {
    /// Reads the identity from a leaf certificate's DNS names.
    pub fn from_certificate(leaf: &CertificateDer<'_>) -> Self {
        let Ok(certificate) = webpki::EndEntityCert::try_from(leaf) else {
            return Self::Client(None);
        };
        let mut client = None;
        for name in certificate.valid_dns_names() {
            if let Some(id) = name
                .strip_prefix("node-")
                .and_then(|rest| rest.strip_suffix(".ordo"))
                .and_then(|id| id.parse::<u64>().ok())
            {
                return Self::Node(id);
            }
            if client.is_none() {
                client = name
                    .strip_prefix("client-")
                    .and_then(|rest| rest.strip_suffix(".ordo"))
                    .filter(|name| valid_identity(name))
                    .map(str::to_string);
            }
        }
        Self::Client(client)
    }

    /// How refusals and logs name the caller.
    pub fn describe(&self) -> String {
        match self {
            Self::Node(id) => format!("node {id}'s certificate"),
            Self::Client(Some(name)) => format!("identity {name:?}"),
            Self::Client(None) => "a client certificate that names no identity".to_string(),
        }
    }
}

fn valid_identity(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IDENTITY_NAME_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Why a request was refused: the sentence names the identity and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// The compiled `[auth]` section.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `None`: no `[auth]` section, every client certificate may do everything.
    rules: Option<Rules>,
}

#[derive(Clone, Debug)]
struct Rules {
    admins: Vec<String>,
    acl: BTreeMap<String, (usize, AclRule)>,
}

impl Policy {
    /// Every client certificate may do everything (no `[auth]` section).
    pub fn open() -> Self {
        Self { rules: None }
    }

    /// Checks and compiles a section; the error names the offending key.
    pub fn new(section: Option<&AuthSection>) -> Result<Self, String> {
        let Some(section) = section else {
            return Ok(Self::open());
        };
        for (index, admin) in section.admins.iter().enumerate() {
            if !valid_identity(admin) {
                return Err(format!(
                    "auth.admins[{index}] = {admin:?} is not an identity (1-64 of a-z, 0-9, '-': \
                     the NAME of a certificate issued as `ordo certs --clients NAME`)"
                ));
            }
        }
        let mut acl = BTreeMap::new();
        for (index, rule) in section.acl.iter().enumerate() {
            if !valid_identity(&rule.identity) {
                return Err(format!(
                    "auth.acl[{index}].identity = {:?} is not an identity (1-64 of a-z, 0-9, \
                     '-')",
                    rule.identity
                ));
            }
            for (list, patterns) in [
                ("write", &rule.write),
                ("read", &rule.read),
                ("locks", &rule.locks),
            ] {
                if patterns.len() > RULE_PATTERNS_MAX {
                    return Err(format!(
                        "auth.acl[{index}].{list} has {} patterns; at most {RULE_PATTERNS_MAX}",
                        patterns.len()
                    ));
                }
                for pattern in patterns {
                    let star = pattern.find('*');
                    if pattern.is_empty() || star.is_some_and(|at| at + 1 != pattern.len()) {
                        return Err(format!(
                            "auth.acl[{index}].{list}: {pattern:?} is not a name or a prefix \
                             ending in '*'"
                        ));
                    }
                }
            }
            if acl
                .insert(rule.identity.clone(), (index, rule.clone()))
                .is_some()
            {
                return Err(format!(
                    "auth.acl[{index}]: identity {:?} has two rules; merge them",
                    rule.identity
                ));
            }
        }
        Ok(Self {
            rules: Some(Rules {
                admins: section.admins.clone(),
                acl,
            }),
        })
    }

    /// Whether the node runs without an `[auth]` section.
    pub fn is_open(&self) -> bool {
        self.rules.is_none()
    }

    /// The topic patterns `caller`'s new topics count against (see
    /// `transport.topics_per_identity_max`): its write patterns, `*` for everyone without an
    /// `[auth]` section, `None` for an admin (not limited).
    pub fn write_patterns(&self, caller: &Caller) -> Option<Vec<String>> {
        let Some(rules) = &self.rules else {
            return Some(vec!["*".to_string()]);
        };
        let Caller::Client(Some(name)) = caller else {
            return Some(Vec::new());
        };
        if rules.admins.iter().any(|admin| admin == name) {
            return None;
        }
        Some(
            rules
                .acl
                .get(name)
                .map(|(_, rule)| rule.write.clone())
                .unwrap_or_default(),
        )
    }

    /// Whether `caller` may make `request`.
    pub fn check(&self, caller: &Caller, request: &ClientRequest) -> Result<(), Denied> {
        let name = match caller {
            Caller::Node(_) => {
                return match request {
                    ClientRequest::Hello | ClientRequest::MemberList => Ok(()),
                    _ => Err(Denied(format!(
                        "{} cannot act as a client (node certificates may only ask for the \
                         member list, to join); use a client certificate",
                        caller.describe()
                    ))),
                };
            }
            Caller::Client(name) => name,
        };
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        if matches!(request, ClientRequest::Hello) {
            return Ok(());
        }
        let Some(name) = name else {
            return Err(Denied(format!(
                "{} is not in auth.admins or auth.acl",
                caller.describe()
            )));
        };
        if rules.admins.iter().any(|admin| admin == name) {
            return Ok(());
        }
        let admin_only = |what: &str| {
            Err(Denied(format!(
                "{what} is an admin operation and identity {name:?} is not in auth.admins"
            )))
        };
        let Some((index, rule)) = rules.acl.get(name) else {
            return Err(Denied(format!(
                "identity {name:?} has no rule in auth.acl and is not in auth.admins"
            )));
        };
        let grant = |list: &str, patterns: &[String], what: &str, target: &str| {
            if patterns.iter().any(|pattern| matches(pattern, target)) {
                Ok(())
            } else {
                Err(Denied(format!(
                    "identity {name:?} may not {what} {target:?} (auth.acl[{index}].{list} = \
                     {patterns:?})"
                )))
            }
        };
        match request {
            ClientRequest::Hello => Ok(()),
            // Where the leader is, and who the members are: every identity with a rule needs
            // them to find the leader.
            ClientRequest::Status | ClientRequest::MemberList => Ok(()),
            ClientRequest::Propose { .. } => admin_only("a raw proposal"),
            ClientRequest::SnapshotSave => admin_only("a snapshot save"),
            ClientRequest::MemberChange { .. } => admin_only("a membership change"),
            ClientRequest::CoordList => {
                grant("locks", &rule.locks, "list every lock and election:", "*")
            }
            ClientRequest::Submit { batch } => {
                for message in &batch.messages {
                    grant("write", &rule.write, "write topic", &message.topic)?;
                }
                for precondition in &batch.preconditions {
                    if let Precondition::TopicOffset { topic, .. } = precondition {
                        grant("write", &rule.write, "test the offset of topic", topic)?;
                    }
                }
                Ok(())
            }
            // Only writers learn outcomes: the answer says whether and where a batch committed.
            ClientRequest::BatchStatus { .. } => {
                if rule.write.is_empty() {
                    Err(Denied(format!(
                        "identity {name:?} writes no topic (auth.acl[{index}].write = []), so \
                         it has no batch outcomes to ask for"
                    )))
                } else {
                    Ok(())
                }
            }
            ClientRequest::Subscribe { topics, .. } => {
                if topics.is_empty() {
                    return grant("read", &rule.read, "read every topic: subscribe to", "*");
                }
                for topic in topics {
                    grant("read", &rule.read, "read topic", topic)?;
                }
                Ok(())
            }
            ClientRequest::OpenSession { .. }
            | ClientRequest::KeepAlive { .. }
            | ClientRequest::CloseSession { .. } => {
                if rule.locks.is_empty() {
                    Err(Denied(format!(
                        "identity {name:?} may use no lock or election (auth.acl[{index}].locks \
                         = []), so it needs no session"
                    )))
                } else {
                    Ok(())
                }
            }
            ClientRequest::Acquire { name: lock, .. }
            | ClientRequest::Release { name: lock, .. } => {
                grant("locks", &rule.locks, "use lock", lock)
            }
            ClientRequest::Proclaim { name: election, .. }
            | ClientRequest::Observe { name: election, .. } => {
                grant("locks", &rule.locks, "use election", election)
            }
        }
    }
}

/// Whether `pattern` (a name, or a prefix ending in `*`) covers `name`. A pattern `*` covers
/// every name, and only a pattern ending in `*` covers the `*` that stands for "all".
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name && name != "*",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::batch::{Batch, BatchId, Message};

    fn parse_policy(text: &str) -> Policy {
        let section: AuthSection = toml::from_str(text).expect("auth section");
        Policy::new(Some(&section)).expect("valid policy")
    }

    fn orders() -> Policy {
        parse_policy(
            r#"
            admins = ["ops"]
            [[acl]]
            identity = "orders-svc"
            write = ["orders", "audit.*"]
            read = ["orders", "payments.*"]
            locks = ["orders.*"]
            "#,
        )
    }

    fn client(name: &str) -> Caller {
        Caller::Client(Some(name.to_string()))
    }

    fn submit(topics: &[&str]) -> ClientRequest {
        let messages = topics
            .iter()
            .map(|topic| Message::new(*topic, &b"x"[..]))
            .collect();
        ClientRequest::Submit {
            batch: Batch {
                id: BatchId([7; 16]),
                messages,
                preconditions: Vec::new(),
            },
        }
    }

    fn subscribe(topics: &[&str]) -> ClientRequest {
        ClientRequest::Subscribe {
            from_seq: 1,
            topics: topics.iter().map(|topic| topic.to_string()).collect(),
        }
    }

    #[test]
    fn writes_need_every_topic_granted() {
        let policy = orders();
        let caller = client("orders-svc");
        policy.check(&caller, &submit(&["orders"])).unwrap();
        policy
            .check(&caller, &submit(&["audit.eu", "orders"]))
            .unwrap();
        let denied = policy
            .check(&caller, &submit(&["orders", "accounts"]))
            .unwrap_err();
        assert!(denied.0.contains("\"accounts\""), "{denied}");
        assert!(denied.0.contains("auth.acl[0].write"), "{denied}");
        // A prefix pattern covers what starts with it, not a name that merely shares letters.
        assert!(policy.check(&caller, &submit(&["audit"])).is_err());
        assert!(policy.check(&caller, &submit(&["orders2"])).is_err());
    }

    #[test]
    fn reads_need_every_filter_topic_and_all_needs_a_star() {
        let policy = orders();
        let caller = client("orders-svc");
        policy
            .check(&caller, &subscribe(&["orders", "payments.eu"]))
            .unwrap();
        assert!(policy.check(&caller, &subscribe(&["accounts"])).is_err());
        let denied = policy.check(&caller, &subscribe(&[])).unwrap_err();
        assert!(denied.0.contains("every topic"), "{denied}");
        // The literal topic "*" is not a way around the star rule.
        assert!(policy.check(&caller, &subscribe(&["*"])).is_err());
        let reader = parse_policy(
            r#"
            [[acl]]
            identity = "auditor"
            read = ["*"]
            "#,
        );
        reader.check(&client("auditor"), &subscribe(&[])).unwrap();
        assert!(
            reader
                .check(&client("auditor"), &submit(&["orders"]))
                .is_err()
        );
    }

    #[test]
    fn admin_operations_need_an_admin() {
        let policy = orders();
        let change = ClientRequest::MemberChange {
            change: ordo_common::membership::MembershipChange::Remove { id: 3 },
        };
        for request in [
            change,
            ClientRequest::SnapshotSave,
            ClientRequest::Propose {
                payload: bytes::Bytes::from_static(b"raw"),
            },
        ] {
            let denied = policy.check(&client("orders-svc"), &request).unwrap_err();
            assert!(denied.0.contains("auth.admins"), "{denied}");
            policy.check(&client("ops"), &request).unwrap();
        }
    }

    #[test]
    fn unknown_identities_and_nodes_are_refused() {
        let policy = orders();
        assert!(policy.check(&client("eve"), &submit(&["orders"])).is_err());
        assert!(
            policy
                .check(&client("eve"), &ClientRequest::Status)
                .is_err()
        );
        assert!(
            policy
                .check(&Caller::Client(None), &submit(&["orders"]))
                .is_err()
        );
        // Without [auth], any client may do anything, but a node is still not a client.
        let open = Policy::open();
        open.check(&client("eve"), &submit(&["accounts"])).unwrap();
        let node = Caller::Node(2);
        let denied = open.check(&node, &submit(&["orders"])).unwrap_err();
        assert!(denied.0.contains("cannot act as a client"), "{denied}");
        open.check(&node, &ClientRequest::MemberList).unwrap();
        open.check(&node, &ClientRequest::Hello).unwrap();
    }

    #[test]
    fn locks_and_elections_follow_the_locks_list() {
        let policy = orders();
        let caller = client("orders-svc");
        let observe = |name: &str| ClientRequest::Observe {
            name: name.to_string(),
            after_revision: 0,
        };
        policy.check(&caller, &observe("orders.leader")).unwrap();
        let denied = policy
            .check(&caller, &observe("billing.leader"))
            .unwrap_err();
        assert!(denied.0.contains("auth.acl[0].locks"), "{denied}");
        assert!(policy.check(&caller, &ClientRequest::CoordList).is_err());
    }

    #[test]
    fn bad_sections_name_the_key() {
        for (text, key) in [
            ("admins = [\"Ops\"]", "auth.admins[0]"),
            (
                "[[acl]]\nidentity = \"a\"\nwrite = [\"a*b\"]",
                "auth.acl[0].write",
            ),
            (
                "[[acl]]\nidentity = \"a\"\nread = [\"\"]",
                "auth.acl[0].read",
            ),
            (
                "[[acl]]\nidentity = \"a\"\n[[acl]]\nidentity = \"a\"",
                "auth.acl[1]",
            ),
        ] {
            let section: AuthSection = toml::from_str(text).unwrap();
            let error = Policy::new(Some(&section)).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
