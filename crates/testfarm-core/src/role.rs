//! API roles and what each may do. The server asks [`Role::allows`] once per request;
//! no handler decides permissions on its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who holds a token. Ordered by power for the human roles; `agent` is apart: it acts
/// only for the resources its agent registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    User,
    Agent,
}

/// What a request wants to do, as coarse as the roles need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read anything (resources, jobs, events, metrics).
    Read,
    /// Submit and cancel one's own jobs, take and release one's own leases.
    Submit,
    /// Change resources and groups, force-release leases, cancel anyone's jobs.
    Operate,
    /// Manage tokens and policies.
    Administer,
    /// Agent protocol: register own resources, heartbeat, pull work, report results.
    ActAsAgent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::User, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::User => "user",
            Role::Agent => "agent",
        }
    }

    /// The permission table. Agents may read (they need their own leases and jobs) but
    /// whether a given resource is theirs is checked by the server against the registry.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => action != ActAsAgent,
            Role::Operator => matches!(action, Read | Submit | Operate),
            Role::User => matches!(action, Read | Submit),
            Role::Agent => matches!(action, Read | ActAsAgent),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of admin, operator, user, agent")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(Role::Admin.allows(Action::Administer));
        assert!(!Role::Operator.allows(Action::Administer));
        assert!(Role::Operator.allows(Action::Operate));
        assert!(!Role::User.allows(Action::Operate));
        assert!(Role::User.allows(Action::Submit));
        assert!(!Role::Agent.allows(Action::Submit));
        assert!(Role::Agent.allows(Action::ActAsAgent));
        assert!(!Role::Admin.allows(Action::ActAsAgent));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}
