//! A client host runs many clients on one thread: every client starts its session with its
//! provider from its own socket, and each stops when asked, saying so.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use loopix_core::roles::RoleConfig;
use loopix_core::roles::client::Client;
use loopix_runtime::client_driver::ClientOutput;
use loopix_runtime::client_host::ClientHost;
use loopix_sim::{NetworkSpec, generate};

const CLIENTS: u32 = 24;

#[test]
fn one_thread_serves_every_client_and_stops_each() {
    let spec = NetworkSpec {
        layers: 1,
        mixes_per_layer: 1,
        providers: 1,
        clients: CLIENTS,
        // Epoch 0 starts now (clients run on unix time) and outlasts the test.
        epoch_start_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        ..NetworkSpec::default()
    };
    let mut net = generate(&spec, 3).unwrap();
    // The provider is a socket of the test: it sees each client's first handshake.
    let provider = UdpSocket::bind("127.0.0.1:0").unwrap();
    provider
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for n in &mut net.topology.nodes {
        if n.role == loopix_core::network::topology::Role::Provider {
            n.address = provider.local_addr().unwrap();
        }
    }
    let mut host = ClientHost::new(1).unwrap();
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut clients: Vec<_> = net
        .keys
        .clients
        .iter()
        .map(|(id, key)| {
            let config = RoleConfig::client(*id, key.clone()).seeded([id.0 as u8; 32]);
            let client = Client::new(&net.topology, config).unwrap();
            host.start(client, bind).unwrap()
        })
        .collect();
    assert_eq!(clients.len(), CLIENTS as usize);
    let addrs: BTreeSet<SocketAddr> = clients.iter().map(|c| c.local_addr).collect();
    assert_eq!(addrs.len(), clients.len(), "a socket each");

    let mut heard = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65_536];
    while heard.len() < addrs.len() && Instant::now() < deadline {
        if let Ok((_, from)) = provider.recv_from(&mut buf) {
            heard.insert(from);
        }
    }
    assert_eq!(
        heard, addrs,
        "every client started its session from its socket"
    );

    for c in &clients {
        c.request_stop();
    }
    for c in &mut clients {
        // No session was ever answered: nothing to acknowledge, so each stops at once.
        c.stop();
        let stopped = c
            .output
            .try_iter()
            .any(|o| matches!(o, ClientOutput::Stopped(_)));
        assert!(stopped, "client {} said it stopped", c.id.0);
        assert_eq!(c.socket_errors(), (0, 0));
        let (max_late_us, late) = c.timer_lag();
        assert_eq!(late, 0, "no timer 50 ms late (worst {max_late_us} µs)");
    }
}
