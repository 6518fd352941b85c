//! InitProducerId for idempotent producers (KIP-98, KIP-360): a fresh
//! producer id at epoch 0. A producer bumping its epoch to recover (v3+,
//! with its current id and epoch) also gets a fresh id, as Kafka gives
//! non-transactional producers. Transactional ids are refused until
//! transactions are built.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::kafka::dispatch::{DispatchError, Reply, RequestContext};

pub fn handle(
    ctx: &RequestContext,
    request: InitProducerIdRequest,
) -> Result<Reply, DispatchError> {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let response = if request.transactional_id.is_some() {
        tracing::debug!(
            event = "init_producer_id_refused",
            reason = "transactions are not supported yet"
        );
        refused(ResponseError::TransactionalIdAuthorizationFailed)
    } else {
        match ctx.broker.allocate_producer_id() {
            Ok(id) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(crate::broker::ProducerIdError::Exhausted) => {
                refused(ResponseError::ProducerFenced)
            }
            Err(crate::broker::ProducerIdError::Unavailable(reason)) => {
                tracing::info!(event = "init_producer_id_unavailable", %reason);
                refused(ResponseError::CoordinatorNotAvailable)
            }
            Err(error) => {
                crate::failstop::storage_failure("persisting a producer id block", &error)
            }
        }
    };
    crate::kafka::errors::count_error(ctx.key, response.error_code);
    ctx.encode(&response).map(Reply::Ready)
}
