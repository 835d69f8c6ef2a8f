"""Feature ids shown in examples (the OpenAPI document, process descriptions): made up, never a real feature's.

Every caller reads those documents, so a real id of a non-public feature there would tell that the feature
exists. The leak tests check that no example value is the id of a feature of a non-public layer.
"""

EXAMPLE_PIPE = "PIPE-EXAMPLE-0001"
EXAMPLE_PROJECT = "PROJECT-EXAMPLE-0001"
EXAMPLE_SENSOR = "SENSOR-EXAMPLE-0001"
