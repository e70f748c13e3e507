//! Who is calling, and what they may do: principals, roles and their scope.
//!
//! Every API request but the webhooks' and the probes' carries a bearer token. The token
//! written at first start (the data dir's `token` file) is the bootstrap system admin; the
//! others are made with `dray token create` and kept hashed in the store ([`tokens`]). A token
//! resolves to a [`Principal`]: a name recorded as the actor of what it changes, a [`Role`] and
//! the projects the role holds in. The API's route table (`api/access.rs`) says which role each
//! route needs; [`Principal::may`] is the one rule that answers.
//!
//! The roles follow Kargo's (project viewer, developer, admin; system admin), named for what
//! they let a team do with Dray:
//! - `viewer` reads a project: resources, logs, watches;
//! - `promoter` also promotes, approves, aborts, verifies again and refreshes Warehouses;
//! - `admin` also applies and deletes the project's resources;
//! - `system-admin` does everything: cluster-wide resources, every project, tokens, plugins.

pub mod device;
pub mod oidc;
pub mod tokens;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resource::{Kind, Object, SHARED_NAMESPACE, SYSTEM_NAMESPACE};

/// What a principal may do, each role including the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads a project's resources, logs and watches.
    Viewer,
    /// Also promotes, approves, aborts, verifies again and refreshes Warehouses.
    Promoter,
    /// Also applies and deletes the project's resources.
    Admin,
    /// Everything, in every project: cluster-wide resources, tokens, plugins.
    SystemAdmin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Promoter => "promoter",
            Role::Admin => "admin",
            Role::SystemAdmin => "system-admin",
        })
    }
}

/// The projects a role holds in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Every project, present and future.
    AllProjects,
    /// These projects only.
    Projects(BTreeSet<String>),
}

impl Scope {
    fn contains(&self, project: &str) -> bool {
        match self {
            Scope::AllProjects => true,
            Scope::Projects(projects) => projects.contains(project),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::AllProjects => f.write_str("*"),
            Scope::Projects(projects) => {
                f.write_str(&projects.iter().cloned().collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// One role in some projects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
}

impl Grant {
    /// Whether this grant holds `role` in `project`, or, with `None`, cluster-wide.
    fn may(&self, role: Role, project: Option<&str>) -> bool {
        if self.role == Role::SystemAdmin {
            return true;
        }
        match project {
            None => role == Role::Viewer,
            Some(SYSTEM_NAMESPACE) => false,
            Some(SHARED_NAMESPACE) => role == Role::Viewer,
            Some(project) => self.role >= role && self.scope.contains(project),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.role, &self.scope) {
            (Role::SystemAdmin, _) => f.write_str("system-admin"),
            (role, Scope::AllProjects) => write!(f, "{role} in every project"),
            (role, scope) => write!(f, "{role} in {scope}"),
        }
    }
}

/// Who is calling: the actor recorded on what they change, and what they may do where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the actor of changes: `admin` for the bootstrap token, `token:NAME` for
    /// API tokens, `email:…` (or `subject:…`) for people signed in with OpenID Connect, as
    /// Kargo writes them.
    pub actor: String,
    /// What it may do: one grant for a token; for a person, one per group with a role (none:
    /// signed in, but no group of theirs has a role).
    pub grants: Vec<Grant>,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.grants.is_empty() {
            return write!(f, "{} (no role)", self.actor);
        }
        let grants: Vec<String> = self.grants.iter().map(Grant::to_string).collect();
        write!(f, "{} ({})", self.actor, grants.join("; "))
    }
}

impl Principal {
    /// The holder of the token written at first start.
    pub fn bootstrap() -> Principal {
        Principal {
            actor: "admin".into(),
            grants: vec![Grant {
                role: Role::SystemAdmin,
                scope: Scope::AllProjects,
            }],
        }
    }

    /// Whether one of its grants makes it a system admin.
    pub fn is_system_admin(&self) -> bool {
        self.grants.iter().any(|g| g.role == Role::SystemAdmin)
    }

    /// Whether this principal holds `role` in `project`, or, with `None`, cluster-wide.
    ///
    /// Cluster-wide, anyone with a role may read (shared definitions, the project list,
    /// filtered by [`Principal::may_see`]) and only a system admin may do more. The
    /// shared-resources project is read by every project (its Secrets are what they share)
    /// and written by system admins; the system-resources project (cluster Secrets) is theirs
    /// alone.
    pub fn may(&self, role: Role, project: Option<&str>) -> bool {
        self.grants.iter().any(|g| g.may(role, project))
    }

    /// Whether this principal holds `role` in every project, present and future.
    pub fn may_everywhere(&self, role: Role) -> bool {
        self.grants.iter().any(|g| {
            g.role == Role::SystemAdmin || (g.role >= role && g.scope == Scope::AllProjects)
        })
    }

    /// Whether a listing or a watch shows `object` to this principal.
    pub fn may_see(&self, object: &Object) -> bool {
        match object.kind {
            Kind::Project => self.may(Role::Viewer, Some(object.name())),
            kind if kind.namespaced() => self.may(Role::Viewer, Some(object.project())),
            _ => self.may(Role::Viewer, None),
        }
    }

    /// Whether this principal may create, change or delete `object`: `admin` of its project
    /// (for a Project, of the project it names), a system admin for cluster-wide kinds.
    pub fn may_write(&self, kind: Kind, project: &str, name: &str) -> bool {
        match kind {
            Kind::Project => self.may(Role::Admin, Some(name)),
            kind if kind.namespaced() => self.may(Role::Admin, Some(project)),
            _ => self.is_system_admin(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, projects: &[&str]) -> Principal {
        Principal {
            actor: "token:t".into(),
            grants: vec![Grant {
                role,
                scope: Scope::Projects(projects.iter().map(|p| p.to_string()).collect()),
            }],
        }
    }

    fn everywhere(role: Role) -> Principal {
        Principal {
            actor: "token:t".into(),
            grants: vec![Grant {
                role,
                scope: Scope::AllProjects,
            }],
        }
    }

    #[test]
    fn a_role_holds_in_its_projects_only() {
        let promoter = principal(Role::Promoter, &["shop"]);
        assert!(promoter.may(Role::Viewer, Some("shop")));
        assert!(promoter.may(Role::Promoter, Some("shop")));
        assert!(!promoter.may(Role::Admin, Some("shop")));
        assert!(!promoter.may(Role::Viewer, Some("bank")));
        assert!(!promoter.may(Role::Promoter, None));
        assert!(promoter.may(Role::Viewer, None));
    }

    #[test]
    fn the_shared_project_is_read_by_all_and_written_by_system_admins() {
        let admin = principal(Role::Admin, &["shop"]);
        assert!(admin.may(Role::Viewer, Some(SHARED_NAMESPACE)));
        assert!(!admin.may_write(Kind::Secret, SHARED_NAMESPACE, "s"));
        assert!(!admin.may(Role::Viewer, Some(SYSTEM_NAMESPACE)));
        assert!(!admin.may_write(Kind::Project, "", SHARED_NAMESPACE));
        let everyone = everywhere(Role::Admin);
        assert!(!everyone.may(Role::Viewer, Some(SYSTEM_NAMESPACE)));
        assert!(Principal::bootstrap().may(Role::Admin, Some(SYSTEM_NAMESPACE)));
    }

    #[test]
    fn grants_add_up_and_none_allows_nothing() {
        let mut person = principal(Role::Admin, &["shop"]);
        person.grants.push(Grant {
            role: Role::Viewer,
            scope: Scope::Projects(["bank".to_string()].into()),
        });
        assert!(person.may(Role::Admin, Some("shop")));
        assert!(person.may(Role::Viewer, Some("bank")));
        assert!(!person.may(Role::Promoter, Some("bank")));
        assert_eq!(
            person.to_string(),
            "token:t (admin in shop; viewer in bank)"
        );
        let nobody = Principal {
            actor: "email:x@example.test".into(),
            grants: Vec::new(),
        };
        assert!(!nobody.may(Role::Viewer, None));
        assert!(!nobody.may(Role::Viewer, Some("shop")));
        assert_eq!(nobody.to_string(), "email:x@example.test (no role)");
    }

    #[test]
    fn cluster_wide_kinds_are_written_by_system_admins_only() {
        let admin = everywhere(Role::Admin);
        assert!(admin.may_write(Kind::Stage, "any", "s"));
        assert!(admin.may_write(Kind::Project, "", "new-project"));
        assert!(!admin.may_write(Kind::ClusterPromotionTask, "", "t"));
        assert!(!admin.may_write(Kind::ClusterConfig, "", "cluster"));
        assert!(Principal::bootstrap().may_write(Kind::ClusterConfig, "", "cluster"));
    }
}
