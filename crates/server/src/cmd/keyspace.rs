//! The keyspace command family.

use super::CommandSpec;

/// The keyspace commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[];
