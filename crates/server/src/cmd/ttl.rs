//! The ttl command family.

use super::CommandSpec;

/// The ttl commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[];
