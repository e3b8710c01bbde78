//! Black-box tests of the simulator over HTTPS, the way cmk-guard talks to it.

mod arm;
mod audit;
mod eventgrid;
mod binary;
mod faults;
mod graph;
mod helpers;
mod identity;
mod keyvault;
mod shapes;
mod throttle;
