//! Argument syntax of every command, for COMMAND DOCS (what `redis-cli` shows as a hint while
//! typing). Each command is documented as one argument whose `display_text` is the whole
//! syntax, which is what redis-cli prints.

/// The argument syntax of `name` (lower case), as Redis' documentation writes it.
pub(crate) fn syntax(name: &str) -> Option<&'static str> {
    Some(match name {
        // strings
        "get" | "strlen" | "getdel" | "incr" | "decr" => "key",
        "set" => "key value [NX|XX|IFEQ comparison-value] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]",
        "setnx" | "getset" | "append" => "key value",
        "setex" => "key seconds value",
        "psetex" => "key milliseconds value",
        "getex" => "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]",
        "mget" => "key [key ...]",
        "mset" | "msetnx" => "key value [key value ...]",
        "incrby" | "decrby" => "key increment",
        "incrbyfloat" => "key increment",
        "getrange" => "key start end",
        "setrange" => "key offset value",
        "lcs" => "key1 key2 [LEN] [IDX] [MINMATCHLEN min-match-len] [WITHMATCHLEN]",
        "substr" => "key start end",
        // bitmaps
        "setbit" => "key offset value",
        "getbit" => "key offset",
        "bitcount" => "key [start end [BYTE|BIT]]",
        "bitpos" => "key bit [start [end [BYTE|BIT]]]",
        "bitop" => "AND|OR|XOR|NOT destkey key [key ...]",
        "bitfield" => "key [GET encoding offset|[OVERFLOW WRAP|SAT|FAIL] SET encoding offset value|INCRBY encoding offset increment ...]",
        "bitfield_ro" => "key [GET encoding offset ...]",
        // keyspace
        "del" | "unlink" | "exists" | "touch" => "key [key ...]",
        "type" | "persist" | "ttl" | "pttl" | "expiretime" | "pexpiretime" => "key",
        "rename" | "renamenx" => "key newkey",
        "copy" => "source destination [DB destination-db] [REPLACE]",
        "move" => "key db",
        "swapdb" => "index1 index2",
        "keys" => "pattern",
        "scan" => "cursor [MATCH pattern] [COUNT count] [TYPE type]",
        "range" => "start end [LIMIT count] [WITHVALUES]",
        "dbsize" | "randomkey" => "",
        "flushdb" | "flushall" => "[ASYNC|SYNC]",
        "object" => "ENCODING|FREQ|IDLETIME|REFCOUNT|HELP key",
        "memory" => "USAGE key [SAMPLES count]|HELP",
        // expiry
        "expire" => "key seconds [NX|XX|GT|LT]",
        "pexpire" => "key milliseconds [NX|XX|GT|LT]",
        "expireat" => "key unix-time-seconds [NX|XX|GT|LT]",
        "pexpireat" => "key unix-time-milliseconds [NX|XX|GT|LT]",
        // transactions
        "watch" => "key [key ...]",
        "multi" | "exec" | "discard" | "unwatch" => "",
        // connection
        "ping" => "[message]",
        "echo" => "message",
        "quit" | "reset" => "",
        "select" => "index",
        "auth" => "[username] password",
        "hello" => "[protover [AUTH username password] [SETNAME clientname]]",
        "client" => "ID|GETNAME|SETNAME name|SETINFO LIB-NAME|LIB-VER value|LIST [TYPE NORMAL] [ID id ...]|INFO|KILL ...|HELP",
        // server
        "info" => "[section [section ...]]",
        "config" => "GET parameter [parameter ...]|SET parameter value [parameter value ...]|RESETSTAT|REWRITE|HELP",
        "command" => "[COUNT|LIST|INFO [command-name ...]|DOCS [command-name ...]|GETKEYS command [arg ...]|HELP]",
        "time" | "save" | "lastsave" => "",
        "bgsave" => "[SCHEDULE]",
        "shutdown" => "[NOSAVE|SAVE] [NOW] [FORCE] [ABORT]",
        "debug" => "SLEEP seconds|SET-ACTIVE-EXPIRE 0|1|OBJECT key|POPULATE count [prefix] [size]|RELOAD|HELP",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_registered_command_has_a_syntax() {
        for spec in crate::cmd::registry().specs() {
            assert!(
                super::syntax(spec.name).is_some(),
                "no syntax for {}",
                spec.name
            );
        }
    }
}
