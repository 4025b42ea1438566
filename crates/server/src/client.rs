//! Per-connection state that commands read and change: selected database,
//! protocol version, authentication, the MULTI queue and WATCHed keys.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_protocol::RespVersion;

use crate::server::ClientHandle;

/// A WATCHed key and the version it had when watched (None: absent).
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub db: usize,
    pub key: Bytes,
    pub version: Option<u64>,
    /// Write epoch of the key's slot when watched (see `Keyspace::write_epoch`).
    pub epoch: u64,
}

/// State of one connection.
#[derive(Debug)]
pub(crate) struct Client {
    /// Shared view (CLIENT LIST / KILL).
    pub handle: Arc<ClientHandle>,
    db: usize,
    resp: RespVersion,
    /// True once AUTH (or HELLO … AUTH) succeeded, or when no password is set.
    pub authenticated: bool,
    /// Commands queued since MULTI; `None` outside a transaction.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queued command was refused (unknown, wrong arity): EXEC answers EXECABORT.
    pub multi_failed: bool,
    /// Bytes of arguments queued since MULTI (bounded, see `cmd::admit`).
    pub multi_bytes: usize,
    /// True while EXEC runs the queue: commands that would wait answer at once instead (WAIT
    /// counts the replicas that already acknowledged, DEBUG SLEEP sleeps in place), as Redis
    /// denies blocking inside MULTI.
    pub in_exec: bool,
    /// Cluster mode: this connection's (R, W), set by CLUSTER QUORUM; `None`: the settings'.
    pub cluster_quorum: Option<(usize, usize, usize)>,
    /// Keys WATCHed, with their versions.
    pub watched: Vec<Watched>,
    /// Close the connection once the replies so far are written (QUIT, CLIENT KILL of self).
    pub close_after_reply: bool,
    /// Send no reply for the last command (SHUTDOWN closes the connection silently).
    pub no_reply: bool,
    /// Highest engine sequence written by this connection's commands since the last sync.
    pub pending_sync_seq: u64,
    /// Set by PSYNC: the connection becomes a replication link once the reply is out.
    pub handoff: Option<crate::replication::leader::Handoff>,
    /// The ACL user this connection acts as (`default` until AUTH names another).
    pub acl: crate::acl::Session,
}

impl Client {
    pub(crate) fn new(handle: Arc<ClientHandle>, authenticated: bool) -> Client {
        Client {
            handle,
            db: 0,
            resp: RespVersion::Resp2,
            authenticated,
            multi: None,
            multi_failed: false,
            multi_bytes: 0,
            in_exec: false,
            cluster_quorum: None,
            watched: Vec::new(),
            close_after_reply: false,
            no_reply: false,
            pending_sync_seq: 0,
            handoff: None,
            acl: crate::acl::Session::new(),
        }
    }

    /// Unique id (CLIENT ID).
    pub(crate) fn id(&self) -> u64 {
        self.handle.id
    }

    /// Selected logical database.
    pub(crate) fn db(&self) -> usize {
        self.db
    }

    /// Selects a logical database (the caller checked the range).
    pub(crate) fn set_db(&mut self, db: usize) {
        self.db = db;
        self.handle.info.lock().db = db;
    }

    /// Protocol version of replies.
    pub(crate) fn resp(&self) -> RespVersion {
        self.resp
    }

    /// Switches the protocol version (HELLO).
    pub(crate) fn set_resp(&mut self, resp: RespVersion) {
        self.resp = resp;
        self.handle.info.lock().resp = resp;
    }

    /// Leaves MULTI and forgets WATCHed keys (EXEC, DISCARD, RESET).
    pub(crate) fn end_transaction(&mut self) {
        self.multi = None;
        self.multi_failed = false;
        self.multi_bytes = 0;
        self.watched.clear();
        self.handle.info.lock().multi = -1;
    }
}
