//! `starling simulate fleet`: vehicles driving around a city's street grid,
//! each publishing its position over MQTT, to feed the web demo's map (or any
//! subscriber of `fleet/{city}/+/location`).
//!
//! The city is a square grid of [`GRID`] × [`GRID`] blocks. A vehicle drives
//! along the streets at its own speed and turns at random at crossings (never
//! back, never off the map). Its position is published to
//! `fleet/{city}/{vehicle}/location` as JSON `{"x":0.4213,"y":0.125}`: fractions
//! of the map's width (x, to the right) and height (y, downwards), the format
//! web/demo/demo.js draws (its "Simulate fleet" button drives the same model).
//!
//! Owns: the vehicle model and the publishing loop (one rumqttc connection for
//! the whole fleet, QoS 0, publishes spread evenly over each period). Must
//! never: know about the broker's internals; it is an ordinary MQTT client.

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use std::time::{Duration, Instant};

/// Blocks per side of the map: streets run at 0, 1, ..., GRID.
pub const GRID: u32 = 8;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub what: Simulation,
}

#[derive(clap::Subcommand, Debug)]
pub enum Simulation {
    /// Vehicles publishing their positions to fleet/{city}/{vehicle}/location
    /// (JSON {"x":..,"y":..}, fractions of the map) for the web demo's map.
    Fleet(FleetArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// The MQTT broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// The city: the second topic level (the demo page shows "demo").
    #[arg(long, default_value = "demo")]
    pub city: String,
    /// Number of vehicles (named car-001, car-002, ...).
    #[arg(long, default_value_t = 50)]
    pub vehicles: u32,
    /// Positions each vehicle publishes per second.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
}

/// Runs a simulation; the CLI's entry point.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    match args.what {
        Simulation::Fleet(fleet_args) => fleet(fleet_args).await.map(|_| ()),
    }
}

/// One vehicle on the street grid, in blocks: one of `x`, `y` is always a
/// whole number (the street it is on), the other says how far along it is.
#[derive(Debug, Clone)]
pub struct Vehicle {
    pub x: f64,
    pub y: f64,
    /// Direction: one of (1,0), (-1,0), (0,1), (0,-1).
    dx: i8,
    dy: i8,
    /// Blocks per second.
    speed: f64,
}

impl Vehicle {
    /// A vehicle somewhere on a random street, 0.5 to 1.5 blocks a second.
    pub fn random(rng: &mut impl Rng) -> Vehicle {
        let street = f64::from(rng.gen_range(0..=GRID));
        let along = rng.gen_range(0.0..f64::from(GRID));
        let speed = rng.gen_range(0.5..1.5);
        if rng.gen_bool(0.5) {
            Vehicle { x: along, y: street, dx: 1, dy: 0, speed }
        } else {
            Vehicle { x: street, y: along, dx: 0, dy: 1, speed }
        }
    }

    /// Drives for `secs`, turning at random at each crossing reached.
    pub fn drive(&mut self, secs: f64, rng: &mut impl Rng) {
        let mut left = self.speed * secs;
        while left > 0.0 {
            let dir = f64::from(self.dx + self.dy);
            let pos = if self.dx != 0 { &mut self.x } else { &mut self.y };
            let crossing = if dir > 0.0 { pos.floor() + 1.0 } else { pos.ceil() - 1.0 };
            let gap = (crossing - *pos).abs();
            if left < gap {
                *pos += dir * left;
                return;
            }
            *pos = crossing;
            left -= gap;
            self.turn(rng);
        }
    }

    /// At a crossing: any way that stays on the map, except back.
    fn turn(&mut self, rng: &mut impl Rng) {
        let inside = |c: f64| (0.0..=f64::from(GRID)).contains(&c);
        let ways: Vec<(i8, i8)> = [(1, 0), (-1, 0), (0, 1), (0, -1)]
            .into_iter()
            .filter(|&(dx, dy)| (dx, dy) != (-self.dx, -self.dy))
            .filter(|&(dx, dy)| inside(self.x + f64::from(dx)) && inside(self.y + f64::from(dy)))
            .collect();
        // A crossing always has a way on, even a corner (the way not taken back).
        (self.dx, self.dy) = ways[rng.gen_range(0..ways.len())];
    }

    /// The message payload: the position as fractions of the map.
    pub fn payload(&self) -> String {
        let grid = f64::from(GRID);
        format!("{{\"x\":{:.4},\"y\":{:.4}}}", self.x / grid, self.y / grid)
    }
}

/// Runs the fleet until `--duration` passes or Ctrl-C; returns the number of
/// positions published.
pub async fn fleet(args: FleetArgs) -> anyhow::Result<u64> {
    if args.vehicles == 0 {
        bail!("--vehicles must be at least 1");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of positions per second");
    }
    if args.city.is_empty() || args.city.contains(['/', '+', '#']) {
        bail!("--city {:?} must be one topic level: not empty, no '/', '+' or '#'", args.city);
    }
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
        .with_context(|| format!("--broker {:?} must be host:port", args.broker))?;

    let mut rng = StdRng::from_entropy();
    let mut options = MqttOptions::new(format!("starling-sim-{:08x}", rng.gen::<u32>()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 1024);
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    });
    match connected.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("cannot connect to {}: {e}", args.broker),
        Err(_) => bail!("no answer from {} in 10 s", args.broker),
    }
    // rumqttc does its I/O (and reconnects) while its event loop is polled.
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "connection to the broker lost; reconnecting in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let mut fleet: Vec<(String, Vehicle)> = (1..=args.vehicles)
        .map(|n| (format!("fleet/{}/car-{n:03}/location", args.city), Vehicle::random(&mut rng)))
        .collect();
    println!(
        "simulating {} vehicles on fleet/{}/+/location via {}, {} positions/s each{}",
        args.vehicles,
        args.city,
        args.broker,
        args.rate,
        if args.duration.is_some() { "" } else { " (Ctrl-C to stop)" }
    );
    let deadline = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await,
            None => std::future::pending().await,
        }
    };
    let stop = async {
        tokio::select! {
            _ = deadline => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tokio::pin!(stop);
    // One vehicle per tick, round-robin: each publishes once per period and
    // the broker sees an even stream rather than a burst every period.
    let period = 1.0 / args.rate;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(period / f64::from(args.vehicles)));
    let started = Instant::now();
    let mut published = 0u64;
    'run: loop {
        for (topic, vehicle) in fleet.iter_mut() {
            tokio::select! {
                _ = &mut stop => break 'run,
                _ = tick.tick() => {}
            }
            vehicle.drive(period, &mut rng);
            tokio::select! {
                _ = &mut stop => break 'run,
                sent = client.publish(topic.as_str(), QoS::AtMostOnce, false, vehicle.payload()) => {
                    sent.context("the MQTT client stopped")?;
                }
            }
            published += 1;
        }
    }
    let _ = client.disconnect().await;
    if tokio::time::timeout(Duration::from_secs(2), poller).await.is_err() {
        tracing::warn!("the broker did not take the DISCONNECT in time");
    }
    println!("published {published} positions in {:.1} s", started.elapsed().as_secs_f64());
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_a_street(v: &Vehicle) -> bool {
        v.x.fract() == 0.0 || v.y.fract() == 0.0
    }

    #[test]
    fn vehicles_stay_on_the_streets_of_the_map() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let mut v = Vehicle::random(&mut rng);
            for _ in 0..200 {
                let before = (v.x, v.y);
                v.drive(0.7, &mut rng);
                let grid = f64::from(GRID);
                assert!((0.0..=grid).contains(&v.x) && (0.0..=grid).contains(&v.y), "{v:?}");
                assert!(on_a_street(&v), "{v:?}");
                // Along streets, a vehicle covers at most speed × time (less
                // only when it turned back on itself around a block).
                let moved = (v.x - before.0).abs() + (v.y - before.1).abs();
                assert!(moved <= v.speed * 0.7 + 1e-9, "{moved} {v:?}");
            }
        }
    }

    #[test]
    fn payload_is_the_position_as_fractions_of_the_map() {
        let v = Vehicle { x: 2.0, y: 3.5, dx: 0, dy: 1, speed: 1.0 };
        let json: serde_json::Value = serde_json::from_str(&v.payload()).unwrap();
        assert_eq!(json["x"].as_f64(), Some(0.25));
        assert_eq!(json["y"].as_f64(), Some(0.4375));
    }
}
