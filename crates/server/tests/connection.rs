//! Connection commands against the real binary.

mod common;

use common::Server;

#[test]
fn ping_echo_and_unknown_command() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(b"PING\r\n", "+PONG\r\n");
    raw.expect(&common::resp(&[b"ping", b"hi"]), "$2\r\nhi\r\n");
    raw.expect(&common::resp(&[b"ECHO", b"x y"]), "$3\r\nx y\r\n");
    raw.expect(
        &common::resp(&[b"nosuch", b"a", b"b"]),
        "-ERR unknown command 'nosuch', with args beginning with: 'a' 'b' \r\n",
    );
    raw.expect(
        &common::resp(&[b"echo"]),
        "-ERR wrong number of arguments for 'echo' command\r\n",
    );
}
