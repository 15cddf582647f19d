//! The services P2PS nodes run as standard: plain messages, broadcast and range multicast,
//! groups. The core does not need them; drivers that want them register them.

use crate::cast::{CastConfig, Casts};
use crate::groups::{GroupConfig, Groups};
use crate::messaging::Messaging;
use crate::node::{Node, RegisterError};
use crate::peer::PeerId;

/// Registers the standard services with default settings on `node`.
pub fn register<P: PeerId>(node: &mut Node<P>) -> Result<(), RegisterError> {
    register_with(node, CastConfig::default(), GroupConfig::default())
}

/// Registers the standard services with the given settings on `node`.
pub fn register_with<P: PeerId>(
    node: &mut Node<P>,
    cast: CastConfig,
    groups: GroupConfig,
) -> Result<(), RegisterError> {
    node.register(Messaging::<P>::default())?;
    node.register(Casts::<P>::new(cast))?;
    node.register(Groups::<P>::new(groups))
}
