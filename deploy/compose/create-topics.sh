#!/bin/bash
# Topics with their partitions and retention, created before any service starts.
# Keep in step with deploy/k8s/base/kafka-topics.yaml (tests/deploy checks both against the code).
set -euo pipefail
BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
topic() {  # name partitions retention-days (-1: kept for ever)
    local retention=-1
    if [ "$3" != "-1" ]; then retention=$(( $3 * 86400000 )); fi
    /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$1" --partitions "$2" --replication-factor 1 \
        --config retention.ms="$retention" --config min.insync.replicas=1
}
topic kt.referrals.v1           6 7               # personal data: short retention
topic kt.requests.stats.v1      6 -1              # no personal data: kept for rebuilding reporting
topic kt.assignments.status.v1  6 -1
topic kt.actions.v1             3 -1
for hub in ashford canterbury dartford dover folkestone-hythe gravesham maidstone \
           sevenoaks swale thanet tonbridge-malling tunbridge-wells; do
    topic "kt.hub.${hub}.v1" 3 14        # personal data: each hub's own topic
done
topic kt.dlq.fulfilment 1 30
topic kt.dlq.referrals  1 30
topic kt.dlq.reporting  1 30
/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --list
