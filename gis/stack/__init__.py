"""The whole topology on one machine (`gis stack`): the embedded primary, streaming standbys, service nodes,
job workers and HAProxy, each started from the deploy/ files a real deployment installs."""
