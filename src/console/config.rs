//! `[console]`: the operators' WebSocket console (`tspi console serve`) and
//! its track tables. No I/O: parsed and checked like every other section.

use crate::config::limits;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;

use super::geodesy::Geodetic;
use super::tracks::{TRACKS_MAX, TracksConfig};

/// `[console]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Run the hub as a role of `tspi run` (read by `tspi run` and `tspi
    /// validate` only; `tspi console serve` runs it whatever this says).
    /// Default false: the hub needs nothing but NATS, so it is switched on
    /// by name, as `[channels] enabled` is.
    pub enabled: bool,
    /// Where the WebSocket hub listens. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Frames per second sent to each browser (1..=60). Default 10.
    pub tick_hz: u64,
    /// Seconds of trail kept per track and sent in snapshots. Default 60.
    pub trail_s: u64,
    /// A track not updated for this long is flagged `"stale": true`.
    /// Default 5.
    pub stale_s: u64,
    /// A track not updated for this long leaves the table (`removed` in
    /// the next frame). Default 300; at least `stale_s`.
    pub expire_s: u64,
    /// Browsers connected at once; one more is refused. Default 256.
    pub clients_max: u64,
    /// Frames queued per browser before it is dropped as too slow.
    /// Default 1024.
    pub events_queue_len: u64,
    /// `Origin` headers accepted on the WebSocket upgrade
    /// (`https://console.range.example`); empty: only the host the console
    /// is served from (same origin).
    pub allowed_origins: Vec<String>,
    /// Operator credentials for the console's operator actions. Empty: the
    /// `[channels]` tokens (`operator_tokens` and `operator_token`) are used,
    /// so one list of operators serves both (see
    /// `Config::console_operator_tokens`); set it only for a console whose
    /// operators differ. Same rules as `[channels]`: each 16..=256
    /// printable ASCII characters, at most 64.
    pub operator_tokens: Vec<String>,
    /// Sensor sites, one per `sensor_id`, for spherical tracks:
    /// `[[console.site]]` tables `{ sensor_id, lat_deg, lon_deg, alt_m }`.
    #[serde(rename = "site")]
    pub sites: Vec<SiteConfig>,
    /// The directory of the web page's files (a build of `web/`: `npm run
    /// build` writes `web/dist`; packages install it as
    /// `/usr/share/tspi/web`). Empty: the first of `$TSPI_WEB_DIR`,
    /// `<executable>/../share/tspi/web`, `/usr/share/tspi/web` and the
    /// source tree's `web/dist` that holds an `index.html`.
    pub web_dir: String,
    /// `[console.map]`: what the page's map shows besides the tracks.
    pub map: MapConfig,
}

/// `[console.map]`: the range origin, its range rings, and an optional
/// offline basemap.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MapConfig {
    /// The range origin (degrees); both or neither. Neither: the first
    /// `[[console.site]]`, else the centre of the first tracks seen.
    pub origin_lat_deg: Option<f64>,
    pub origin_lon_deg: Option<f64>,
    /// Range rings around the origin, km.
    pub rings_km: Vec<f64>,
    /// A PMTiles file (raster or vector tiles) served to the page as its
    /// basemap, with no network. Empty: no basemap (background,
    /// graticule, origin and rings).
    pub tiles: String,
}

/// Range rings at most.
pub const MAP_RINGS_MAX: usize = 16;
/// The largest range ring (km).
pub const MAP_RING_KM_MAX: f64 = 2_000.0;

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            origin_lat_deg: None,
            origin_lon_deg: None,
            rings_km: vec![10.0, 25.0, 50.0, 100.0],
            tiles: String::new(),
        }
    }
}

impl MapConfig {
    fn problems(&self, p: &mut Vec<String>) {
        match (self.origin_lat_deg, self.origin_lon_deg) {
            (Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) {
                    p.push(format!(
                        "console.map.origin_lat_deg = {lat}: must be -90..=90"
                    ));
                }
                if !(-180.0..=180.0).contains(&lon) {
                    p.push(format!(
                        "console.map.origin_lon_deg = {lon}: must be -180..=180"
                    ));
                }
            }
            (None, None) => {}
            _ => p.push(
                "console.map: origin_lat_deg and origin_lon_deg go together (both or neither)"
                    .into(),
            ),
        }
        if self.rings_km.len() > MAP_RINGS_MAX {
            p.push(format!(
                "console.map.rings_km: {} rings: at most {MAP_RINGS_MAX}",
                self.rings_km.len()
            ));
        }
        for r in &self.rings_km {
            if !(*r > 0.0 && *r <= MAP_RING_KM_MAX) {
                p.push(format!(
                    "console.map.rings_km: {r}: each ring must be more than 0 and at most \
                     {MAP_RING_KM_MAX} km"
                ));
            }
        }
        if !self.tiles.is_empty() && !self.tiles.ends_with(".pmtiles") {
            p.push(format!(
                "console.map.tiles = {:?}: must be a PMTiles file (*.pmtiles)",
                self.tiles
            ));
        }
    }

    /// The origin: the configured one, else the first site's.
    pub fn origin(&self, sites: &[SiteConfig]) -> Option<(f64, f64)> {
        match (self.origin_lat_deg, self.origin_lon_deg) {
            (Some(lat), Some(lon)) => Some((lat, lon)),
            _ => sites.first().map(|s| (s.lat_deg, s.lon_deg)),
        }
    }
}

/// `[[console.site]]`: where a spherical sensor stands.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub sensor_id: u16,
    /// Geodetic latitude, degrees north, -90..=90.
    pub lat_deg: f64,
    /// Longitude, degrees east, -180..=180.
    pub lon_deg: f64,
    /// Height above the WGS84 ellipsoid (m), -1000..=100000.
    pub alt_m: f64,
}

impl SiteConfig {
    pub fn geodetic(&self) -> Geodetic {
        Geodetic {
            lat_deg: self.lat_deg,
            lon_deg: self.lon_deg,
            alt_m: self.alt_m,
        }
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        use limits::*;
        ConsoleConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tick_hz: CONSOLE_TICK_HZ.default,
            trail_s: CONSOLE_TRAIL_S.default,
            stale_s: CONSOLE_STALE_S.default,
            expire_s: CONSOLE_EXPIRE_S.default,
            clients_max: CONSOLE_CLIENTS_MAX.default,
            events_queue_len: CONSOLE_EVENTS_QUEUE_LEN.default,
            allowed_origins: Vec::new(),
            operator_tokens: Vec::new(),
            sites: Vec::new(),
            web_dir: String::new(),
            map: MapConfig::default(),
        }
    }
}

impl ConsoleConfig {
    /// Every problem with these values (empty: fine), each naming its key.
    pub fn problems(&self) -> Vec<String> {
        use limits::*;
        let mut p = Vec::new();
        let k = |key: &str| format!("console.{key}");
        CONSOLE_TICK_HZ.check(&k("tick_hz"), self.tick_hz, &mut p);
        CONSOLE_TRAIL_S.check(&k("trail_s"), self.trail_s, &mut p);
        CONSOLE_STALE_S.check(&k("stale_s"), self.stale_s, &mut p);
        CONSOLE_EXPIRE_S.check(&k("expire_s"), self.expire_s, &mut p);
        CONSOLE_CLIENTS_MAX.check(&k("clients_max"), self.clients_max, &mut p);
        CONSOLE_EVENTS_QUEUE_LEN.check(&k("events_queue_len"), self.events_queue_len, &mut p);
        if self.expire_s < self.stale_s {
            p.push(format!(
                "console.expire_s = {} is shorter than console.stale_s = {}: a track would \
                 leave the table before it is shown stale",
                self.expire_s, self.stale_s
            ));
        }
        if self.allowed_origins.len() > CONSOLE_ALLOWED_ORIGINS_MAX {
            p.push(format!(
                "console.allowed_origins: {} origins: at most {CONSOLE_ALLOWED_ORIGINS_MAX}",
                self.allowed_origins.len()
            ));
        }
        for o in &self.allowed_origins {
            let scheme_ok = o.starts_with("http://") || o.starts_with("https://");
            let host = o.split_once("://").map_or("", |(_, h)| h);
            if !scheme_ok || host.is_empty() || host.contains(['/', ' ']) {
                p.push(format!(
                    "console.allowed_origins: {o:?} is not an origin \
                     (scheme://host[:port], e.g. https://console.range.example)"
                ));
            }
        }
        let n = self.operator_tokens.len();
        if n > CHANNELS_OPERATOR_TOKENS_MAX {
            p.push(format!(
                "console.operator_tokens: {n} tokens: at most {CHANNELS_OPERATOR_TOKENS_MAX}"
            ));
        }
        let lens = CHANNELS_OPERATOR_TOKEN_LEN_MIN..=CHANNELS_OPERATOR_TOKEN_LEN_MAX;
        for (i, t) in self.operator_tokens.iter().enumerate() {
            if !lens.contains(&t.len()) || !t.chars().all(|c| c.is_ascii_graphic()) {
                // Never the token itself: it is a secret.
                p.push(format!(
                    "console.operator_tokens: token {} of {n}: must be \
                     {CHANNELS_OPERATOR_TOKEN_LEN_MIN}..={CHANNELS_OPERATOR_TOKEN_LEN_MAX} \
                     printable ASCII characters without spaces",
                    i + 1
                ));
            }
        }
        if self.sites.len() > CONSOLE_SITES_MAX {
            p.push(format!(
                "console.site: {} sites: at most {CONSOLE_SITES_MAX}",
                self.sites.len()
            ));
        }
        self.map.problems(&mut p);
        let mut seen = HashMap::new();
        for (i, s) in self.sites.iter().enumerate() {
            let at = format!("console.site[{i}] (sensor_id {})", s.sensor_id);
            if let Some(first) = seen.insert(s.sensor_id, i) {
                p.push(format!(
                    "console.site[{i}]: sensor_id {} already has a site (console.site[{first}])",
                    s.sensor_id
                ));
            }
            let ranges = [
                ("lat_deg", s.lat_deg, -90.0, 90.0),
                ("lon_deg", s.lon_deg, -180.0, 180.0),
                ("alt_m", s.alt_m, CONSOLE_SITE_ALT_M.0, CONSOLE_SITE_ALT_M.1),
            ];
            for (key, v, lo, hi) in ranges {
                if !(lo..=hi).contains(&v) {
                    p.push(format!("{at}.{key} = {v}: must be {lo}..={hi}"));
                }
            }
        }
        p
    }

    /// What each channel's [`TrackTable`](super::tracks::TrackTable) needs.
    pub fn tracks_config(&self) -> TracksConfig {
        let ms = limits::MS_PER_S;
        TracksConfig {
            trail_ms: self.trail_s.saturating_mul(ms),
            trail_points_max: limits::CONSOLE_TRAIL_POINTS_MAX,
            stale_ms: self.stale_s.saturating_mul(ms),
            expire_ms: self.expire_s.saturating_mul(ms),
            tracks_max: TRACKS_MAX,
            sites: self.sites_by_sensor(),
        }
    }

    /// The sites by sensor id (the first of duplicates; validation refuses
    /// them anyway).
    pub fn sites_by_sensor(&self) -> HashMap<u16, Geodetic> {
        let mut m = HashMap::with_capacity(self.sites.len());
        for s in &self.sites {
            m.entry(s.sensor_id).or_insert_with(|| s.geodetic());
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConsoleConfig, toml::de::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            console: ConsoleConfig,
        }
        toml::from_str::<File>(text).map(|f| f.console)
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, ConsoleConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (c.tick_hz, c.trail_s, c.stale_s, c.expire_s),
            (10, 60, 5, 300)
        );
        assert_eq!((c.clients_max, c.events_queue_len), (256, 1024));
        assert!(c.allowed_origins.is_empty() && c.operator_tokens.is_empty());
        assert!(c.sites.is_empty());
        assert!(!c.enabled, "a role of tspi run only when switched on");
        assert_eq!(c.problems(), Vec::<String>::new());
        let on = parse("[console]\nenabled = true\n").unwrap();
        assert!(on.enabled);
        let e = parse("[console]\nenabled = \"yes\"\n").unwrap_err();
        assert!(e.to_string().contains("enabled"), "{e}");
    }

    #[test]
    fn sites_parse_and_index_by_sensor() {
        let c = parse(
            "[console]\nlisten = \"0.0.0.0:9000\"\n\
             [[console.site]]\nsensor_id = 7\nlat_deg = 32.5\nlon_deg = -106.5\nalt_m = 1200.0\n\
             [[console.site]]\nsensor_id = 8\nlat_deg = -10\nlon_deg = 20\nalt_m = 0\n",
        )
        .unwrap();
        assert_eq!(c.problems(), Vec::<String>::new());
        let m = c.sites_by_sensor();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&7].lat_deg, 32.5);
        assert_eq!(m[&8].lon_deg, 20.0);
    }

    #[test]
    fn map_section_parses_and_checks() {
        let c = parse("").unwrap();
        assert_eq!(c.map.rings_km, vec![10.0, 25.0, 50.0, 100.0]);
        assert_eq!(c.map.origin(&[]), None);
        let c = parse(
            "[console.map]\norigin_lat_deg = 32.4\norigin_lon_deg = -106.4\n\
             rings_km = [5]\ntiles = \"/srv/range.pmtiles\"\n",
        )
        .unwrap();
        assert_eq!(c.problems(), Vec::<String>::new());
        assert_eq!(c.map.origin(&[]), Some((32.4, -106.4)));
        let site = SiteConfig {
            sensor_id: 1,
            lat_deg: 1.0,
            lon_deg: 2.0,
            alt_m: 0.0,
        };
        let c = parse("").unwrap();
        assert_eq!(c.map.origin(&[site]), Some((1.0, 2.0)));
        let c = parse(
            "[console.map]\norigin_lat_deg = 95\nrings_km = [0, 3000]\ntiles = \"x.mbtiles\"\n",
        )
        .unwrap();
        let p = c.problems().join("\n");
        for want in ["go together", "rings_km: 0", "rings_km: 3000", "x.mbtiles"] {
            assert!(p.contains(want), "{want} not in {p}");
        }
        let e = parse("[console.map]\nzoom = 3\n").unwrap_err();
        assert!(e.to_string().contains("zoom"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("[console]\ntick_rate = 3\n").unwrap_err();
        assert!(e.to_string().contains("tick_rate"), "{e}");
        let e =
            parse("[[console.site]]\nsensor_id = 1\nlat_deg = 0\nlon_deg = 0\nalt_m = 0\nh = 1\n")
                .unwrap_err();
        assert!(e.to_string().contains('h'), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = ConsoleConfig {
            tick_hz: 0,
            expire_s: 2,
            stale_s: 5,
            allowed_origins: vec!["console.example".into()],
            operator_tokens: vec!["tiny-secret".into()],
            ..ConsoleConfig::default()
        };
        c.sites.push(SiteConfig {
            sensor_id: 3,
            lat_deg: 91.0,
            lon_deg: 0.0,
            alt_m: f64::NAN,
        });
        let p = c.problems().join("\n");
        assert!(p.contains("console.tick_hz = 0: must be 1..=60"), "{p}");
        assert!(p.contains("console.expire_s = 2 is shorter"), "{p}");
        assert!(
            p.contains("console.allowed_origins: \"console.example\""),
            "{p}"
        );
        assert!(p.contains("console.operator_tokens: token 1 of 1"), "{p}");
        assert!(!p.contains("tiny-secret"), "a token is never shown: {p}");
        assert!(
            p.contains("console.site[0] (sensor_id 3).lat_deg = 91"),
            "{p}"
        );
        assert!(
            p.contains("console.site[0] (sensor_id 3).alt_m = NaN"),
            "{p}"
        );
        c.tick_hz = 61;
        assert!(c.problems().join("\n").contains("console.tick_hz = 61"));
    }

    #[test]
    fn a_sensor_has_one_site() {
        let site = |sensor_id| SiteConfig {
            sensor_id,
            lat_deg: 1.0,
            lon_deg: 2.0,
            alt_m: 3.0,
        };
        let c = ConsoleConfig {
            sites: vec![site(4), site(5), site(4)],
            ..ConsoleConfig::default()
        };
        assert_eq!(
            c.problems(),
            vec!["console.site[2]: sensor_id 4 already has a site (console.site[0])".to_owned()]
        );
    }
}
