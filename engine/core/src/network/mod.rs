//! Who is in the network and where: the topology, the path index senders choose from, node
//! addresses, the authenticated links between adjacent nodes, and the key epochs.

pub mod epoch;
pub mod link;
pub mod node_addresses;
pub mod path_index;
pub mod topology;
