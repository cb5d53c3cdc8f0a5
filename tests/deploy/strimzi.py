"""The parts of Strimzi's v1beta2 CRD schemas (KafkaTopic, KafkaUser) the manifests use.

Kubernetes' own schemas know nothing of custom resources; these follow the CRDs
Strimzi installs (040-Crd-kafkatopic.yaml, 044-Crd-kafkauser.yaml), closed to
unknown fields so a typo fails.
"""

OPERATIONS = [
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "AlterConfigs",
    "DescribeConfigs",
    "IdempotentWrite",
    "All",
]

_METADATA = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {"labels": {"type": "object", "required": ["strimzi.io/cluster"]}},
}

KAFKA_TOPIC = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["partitions", "replicas"],
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "integer", "boolean", "number"]},
                },
            },
        },
    },
}

KAFKA_USER = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaUser"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
                },
                "authorization": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "acls"],
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["resource"],
                                "properties": {
                                    "resource": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["type"],
                                        "properties": {
                                            "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                                            "name": {"type": "string"},
                                            "patternType": {"enum": ["literal", "prefix"]},
                                        },
                                    },
                                    "operations": {"type": "array", "items": {"enum": OPERATIONS}, "minItems": 1},
                                    "host": {"type": "string"},
                                    "type": {"enum": ["allow", "deny"]},
                                },
                            },
                        },
                    },
                },
                "quotas": {"type": "object"},
                "template": {"type": "object"},
            },
        },
    },
}

SCHEMAS = {"KafkaTopic": KAFKA_TOPIC, "KafkaUser": KAFKA_USER}
