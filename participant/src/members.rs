//! Cluster membership for operators: list the coordinators, add, promote and remove them.
//!
//! These are admin operations: any holder of a certificate from the cluster's CA may run them
//! until per-identity authorization exists, so keep client certificates for operators.

use std::time::Instant;

use ordo_common::client::{ClientRequest, ClientResponse, MemberList};
use ordo_common::membership::{MembershipChange, MembershipError};
use ordo_common::{LogIndex, Membership};

use crate::client::{Client, Patience, QueryError};

/// Why a membership request failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The leader refused the change as it stands (the variant is the stable reason).
    #[error("refused: {0}")]
    Refused(MembershipError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl Client {
    /// The members as the leader sees them: voters and learners, reachable or not, how far
    /// each log has come.
    pub async fn member_list(&self) -> Result<MemberList, MemberError> {
        let deadline = Instant::now() + self.retry_timeout();
        match self
            .leader_call(&ClientRequest::MemberList, deadline, Patience::Normal)
            .await?
        {
            ClientResponse::Members(list) => Ok(*list),
            other => Err(MemberError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Changes the membership, one server at a time; answered once the change committed, with
    /// its index and the membership from then on.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<(LogIndex, Membership), MemberError> {
        let deadline = Instant::now() + self.retry_timeout();
        let request = ClientRequest::MemberChange { change };
        match self
            .leader_call(&request, deadline, Patience::Normal)
            .await?
        {
            ClientResponse::MembershipChanged { index, membership } => Ok((index, *membership)),
            ClientResponse::MembershipRefused(error) => Err(MemberError::Refused(error)),
            other => Err(MemberError::Unexpected(format!("{other:?}"))),
        }
    }
}
