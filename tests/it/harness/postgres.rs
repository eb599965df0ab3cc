//! The harness against a real PostgreSQL: connect, query, write, and keep the
//! data across a stop and restart.

use tokio::task::{JoinHandle, block_in_place};
use tokio_postgres::{Client, NoTls};
use tspi_testkit::harness::PgCluster;

async fn connect(pg: &PgCluster) -> (Client, JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, connection) = tokio_postgres::connect(&pg.dsn(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", pg.dsn()));
    (client, tokio::spawn(connection))
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_query_write_and_restart() {
    let mut pg = block_in_place(PgCluster::start).expect("start postgres");
    assert_eq!(
        pg.dsn(),
        format!(
            "host=127.0.0.1 port={} user=tspi dbname=postgres",
            pg.port()
        )
    );
    let (client, connection) = connect(&pg).await;

    let two: i32 = client.query_one("SELECT 1 + 1", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version.starts_with("PostgreSQL "), "{version}");
    let user: String = client
        .query_one("SELECT current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "tspi");

    client
        .batch_execute(
            "CREATE TABLE telemetry (
                 msg_id  text PRIMARY KEY,
                 subject text NOT NULL,
                 body    bytea NOT NULL
             )",
        )
        .await
        .unwrap();
    let body: Vec<u8> = (0..=255).collect();
    let inserted = client
        .execute(
            "INSERT INTO telemetry (msg_id, subject, body) VALUES ($1, $2, $3)",
            &[&"101.42.12345", &"tspi.geocentric.101", &body],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    let row = client
        .query_one(
            "SELECT subject, body FROM telemetry WHERE msg_id = $1",
            &[&"101.42.12345"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "tspi.geocentric.101");
    assert_eq!(row.get::<_, Vec<u8>>(1), body);
    drop(client);
    connection.await.unwrap().unwrap();

    // Stop, then start on the same port and data directory: the row is there.
    let port = pg.port();
    block_in_place(|| pg.stop());
    assert!(!pg.is_running());
    pg.stop(); // idempotent
    assert!(
        tokio_postgres::connect(&pg.dsn(), NoTls).await.is_err(),
        "stopped means stopped"
    );
    block_in_place(|| pg.restart()).expect("restart postgres");
    assert_eq!(pg.port(), port);

    let (client, connection) = connect(&pg).await;
    let rows = client
        .query("SELECT msg_id, body FROM telemetry", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "101.42.12345");
    assert_eq!(rows[0].get::<_, Vec<u8>>(1), body);
    drop(client);
    connection.await.unwrap().unwrap();

    assert!(
        pg.log_tail(100).contains("database system is ready"),
        "{}",
        pg.log_tail(50)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_side_by_side() {
    // Tests run in parallel: two clusters must not collide on ports or dirs.
    let (a, b) = block_in_place(|| (PgCluster::start(), PgCluster::start()));
    let (a, b) = (a.expect("start a"), b.expect("start b"));
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    for pg in [&a, &b] {
        let (client, connection) = connect(pg).await;
        let port: String = client.query_one("SHOW port", &[]).await.unwrap().get(0);
        assert_eq!(port, pg.port().to_string());
        drop(client);
        connection.await.unwrap().unwrap();
    }
}

/// A server with TimescaleDB preloaded, and the ordinary role the archive
/// tests connect as: not a superuser, cannot read the preload list, owns
/// its database, where the DBA's step created the extension.
#[tokio::test(flavor = "multi_thread")]
async fn timescaledb_server_and_ordinary_role() {
    let test = "harness::postgres::timescaledb_server_and_ordinary_role";
    if !tspi_testkit::skip::require(test, tspi_testkit::skip::timescaledb()) {
        return;
    }
    let pg = block_in_place(PgCluster::start_timescaledb).expect("postgres + timescaledb");
    assert!(pg.has_timescaledb());
    let role = block_in_place(|| pg.ordinary_database("app")).expect("role");
    let (client, connection) = tokio_postgres::connect(&role.dsn, NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT rolsuper, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                    current_setting('timescaledb.license'), current_database()
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "not a superuser");
    assert!(
        row.get::<_, Option<String>>(1).is_some(),
        "extension created"
    );
    let license: String = row.get(2);
    assert!(
        ["apache", "timescale"].contains(&license.as_str()),
        "{license}"
    );
    assert_eq!(row.get::<_, String>(3), "app");
    let err = client
        .query_one("SELECT current_setting('shared_preload_libraries')", &[])
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("pg_read_all_settings"),
        "{err:?}"
    );
}
