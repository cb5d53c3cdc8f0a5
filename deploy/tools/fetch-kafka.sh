#!/bin/sh
# Apache Kafka's jars from Maven Central (Maven, Java 17), into a cache folder reused
# between runs: $KT_KAFKA_HOME, else ~/.cache/kent-together/kafka-<version>. Prints
# nothing when they are already there. shared/apache_kafka.py runs the brokers.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
home=${KT_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kent-together/kafka-$version}
[ -f "$home/libs/.complete" ] && exit 0
for tool in java mvn; do
    command -v $tool >/dev/null 2>&1 && continue
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
    else
        echo "Apache Kafka for the tests needs Java 17 and Maven (apt-get install openjdk-17-jre-headless maven)." >&2
        exit 1
    fi
done
echo "Fetching Apache Kafka $version from Maven Central into $home ..."
rm -rf "$home/libs"
mkdir -p "$home"
mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$home/libs" -DincludeScope=runtime
touch "$home/libs/.complete"
echo "Apache Kafka $version: $(ls "$home/libs" | wc -l) jars in $home/libs"
