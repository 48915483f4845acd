//! audit: read-only checks of the tenant against LDAP, for operators who must prove that the
//! Linux hybrid works. Nothing here writes to the tenant or to the state store.
//!
//! - [`gal`]: `ldap2exo audit gal`, the global address list audit. Mail from on-prem
//!   senders is treated as internal only when every sender resolves to a recipient in the
//!   tenant (TENANT_FACTS "Connectors"); EXO users reach on-prem people only through their
//!   MailUsers. The audit compares each mapped LDAP person with what Exchange and Entra show
//!   and names every way the person would fail to resolve, route or receive, each with its
//!   fix, and the share of people the GAL resolves.
//! - [`render`]: the GAL audit as text, JSON, CSV and Markdown.
//!
//! The findings are computed purely from the desired recipients ([`crate::desired`]) and the
//! tenant inventory ([`crate::inventory`]); the command (`commands::audit`) does the I/O.

pub mod gal;
pub mod render;

pub use gal::{Code, Finding, GalAudit, Summary, audit_gal};
