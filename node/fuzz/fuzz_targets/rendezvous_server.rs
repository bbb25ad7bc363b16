//! Rendezvous requests (REGISTER, UNREGISTER, DISCOVER; both dialects) through the real server:
//! decode, record verification, policy, table and its RocksDB (in a temporary directory).
#![no_main]

use std::{cell::RefCell, sync::Arc};

use libfuzzer_sys::fuzz_target;
use libp2p::PeerId;
use roost_node::{
    health::Health,
    metrics::new_registry,
    rendezvous::{self, Dialect, ReservedNamespaces, Server},
};

struct Fixture {
    server: Server,
    peer: PeerId,
    now_ms: u64,
    _dir: tempfile::TempDir,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new({
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut registry = new_registry();
        let metrics = rendezvous::Metrics::register(&mut registry);
        let server = Server::open(
            &rendezvous::Config::default(),
            dir.path(),
            metrics,
            Health::default(),
            Arc::new(ReservedNamespaces),
        )
        .expect("rendezvous server");
        Fixture {
            server,
            peer: PeerId::random(),
            now_ms: 1_700_000_000_000,
            _dir: dir,
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, request)) = data.split_first() else {
        return;
    };
    let dialect = if first & 1 == 0 {
        Dialect::Libp2p
    } else {
        Dialect::Waku
    };
    FIXTURE.with(|f| {
        let f = &mut *f.borrow_mut();
        f.now_ms += 1_000;
        let _ = f.server.handle(f.peer, dialect, request, f.now_ms);
        if first & 2 != 0 {
            f.server.expire(f.now_ms);
        }
    });
});
