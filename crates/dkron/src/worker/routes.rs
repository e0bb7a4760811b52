//! The RPC routes every node (server or agent) serves for run orders.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::routing::post;

use super::OrderExecutor;
use crate::rpc::wire::{self, RunOrder, StopOrder};

/// `/rpc/execute` (run or join an order, answering within [`wire::EXECUTE_HOLD`]),
/// `/rpc/stop` (end a run replaced by a newer one), and `/rpc/output` (what a run printed so
/// far, for the dashboard).
pub fn router(orders: Arc<OrderExecutor>) -> axum::Router {
    axum::Router::new()
        .route(
            wire::EXECUTE,
            post(
                async |State(orders): State<Arc<OrderExecutor>>, Json(order): Json<RunOrder>| {
                    Json(orders.answer(order, wire::EXECUTE_HOLD).await)
                },
            ),
        )
        .route(
            wire::STOP,
            post(
                async |State(orders): State<Arc<OrderExecutor>>, Json(stop): Json<StopOrder>| {
                    Json(orders.stop(&stop.job_name, &stop.execution_id, stop.reason))
                },
            ),
        )
        .route(
            wire::OUTPUT,
            post(
                async |State(orders): State<Arc<OrderExecutor>>,
                       Json((job, id)): Json<(String, String)>| {
                    Json(orders.output(&job, &id))
                },
            ),
        )
        .with_state(orders)
}
