//! ACL users over the wire: a read-only user cannot write, a user limited to `app:*` cannot
//! read `other:*`, AUTH user pass, WHOAMI / GETUSER / LIST / DELUSER, and requirepass as the
//! `default` user's password.

mod ops;

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

fn error_text(result: redis::RedisResult<redis::Value>) -> String {
    match result {
        Err(e) => format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or("")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn read_only_user_cannot_write_and_key_patterns_bind() {
    let (config, dir) = ops::config();
    let running = ops::start(config, dir);
    let mut admin = running.client();
    cmd(&mut admin, &["SET", "other:1", "secret"]).unwrap();
    cmd(&mut admin, &["SET", "app:1", "visible"]).unwrap();
    cmd(
        &mut admin,
        &["ACL", "SETUSER", "reader", "on", ">readpw", "~*", "+@read"],
    )
    .unwrap();
    cmd(
        &mut admin,
        &[
            "ACL",
            "SETUSER",
            "app",
            "on",
            ">apppw",
            "~app:*",
            "+@all",
            "-@dangerous",
        ],
    )
    .unwrap();

    let mut reader = running.client();
    cmd(&mut reader, &["AUTH", "reader", "readpw"]).unwrap();
    assert_eq!(
        cmd(&mut reader, &["ACL", "WHOAMI"]).unwrap(),
        redis::Value::BulkString(b"reader".to_vec())
    );
    assert_eq!(
        cmd(&mut reader, &["GET", "app:1"]).unwrap(),
        redis::Value::BulkString(b"visible".to_vec())
    );
    let refused = error_text(cmd(&mut reader, &["SET", "app:1", "x"]));
    assert!(refused.starts_with("NOPERM"), "{refused}");
    assert!(refused.contains("'set'"), "{refused}");
    assert!(error_text(cmd(&mut reader, &["DEL", "app:1"])).starts_with("NOPERM"));

    let mut app = running.client();
    cmd(&mut app, &["AUTH", "app", "apppw"]).unwrap();
    cmd(&mut app, &["SET", "app:2", "ok"]).unwrap();
    assert!(error_text(cmd(&mut app, &["GET", "other:1"])).starts_with("NOPERM"));
    assert!(error_text(cmd(&mut app, &["SET", "other:2", "x"])).starts_with("NOPERM"));
    // Every key of a multi-key command is checked.
    assert!(error_text(cmd(&mut app, &["MGET", "app:1", "other:1"])).starts_with("NOPERM"));
    assert!(error_text(cmd(&mut app, &["FLUSHALL"])).starts_with("NOPERM"));
    // ACL itself is @admin/@dangerous.
    assert!(error_text(cmd(&mut app, &["ACL", "SETUSER", "app", "~*"])).starts_with("NOPERM"));

    // Wrong password, unknown user.
    let mut other = running.client();
    assert!(error_text(cmd(&mut other, &["AUTH", "app", "wrong"])).starts_with("WRONGPASS"));
    assert!(error_text(cmd(&mut other, &["AUTH", "nobody", "x"])).starts_with("WRONGPASS"));

    // GETUSER shows hashes, never the password; LIST lists the users.
    let user = cmd(&mut admin, &["ACL", "GETUSER", "app"]).unwrap();
    let shown = format!("{user:?}");
    assert!(!shown.contains("apppw"), "{shown}");
    assert!(shown.contains("app:*"), "{shown}");
    let list = format!("{:?}", cmd(&mut admin, &["ACL", "LIST"]).unwrap());
    assert!(
        list.contains("user reader on") && list.contains("user default on nopass"),
        "{list}"
    );

    // A deleted user's open connection loses its rights at once.
    assert_eq!(
        cmd(&mut admin, &["ACL", "DELUSER", "reader"]).unwrap(),
        redis::Value::Int(1)
    );
    assert!(error_text(cmd(&mut reader, &["GET", "app:1"])).starts_with("NOPERM"));
    assert!(error_text(cmd(&mut admin, &["ACL", "DELUSER", "default"])).contains("default"));

    let (_, metrics) = running.http_get("/metrics");
    assert!(
        metrics.contains("ringkv_acl_denials_total "),
        "denials are counted"
    );
}

#[test]
fn requirepass_is_the_default_users_password() {
    let (mut config, dir) = ops::config();
    config.requirepass = Some("s3cret".into());
    let running = ops::start(config, dir);
    let mut con = running.client();
    assert!(error_text(cmd(&mut con, &["GET", "k"])).starts_with("NOAUTH"));
    assert!(error_text(cmd(&mut con, &["AUTH", "nope"])).starts_with("WRONGPASS"));
    cmd(&mut con, &["AUTH", "s3cret"]).unwrap();
    cmd(&mut con, &["SET", "k", "v"]).unwrap();
    let mut named = running.client();
    cmd(&mut named, &["AUTH", "default", "s3cret"]).unwrap();
    // CONFIG SET requirepass changes the default user's password.
    cmd(&mut con, &["CONFIG", "SET", "requirepass", "n3w"]).unwrap();
    let mut late = running.client();
    assert!(error_text(cmd(&mut late, &["AUTH", "s3cret"])).starts_with("WRONGPASS"));
    cmd(&mut late, &["AUTH", "n3w"]).unwrap();
}
