"""OGC API Features queries as pure functions: parameters in, psycopg.sql compositions and values out.

- params.py     request parameters (limit, bbox, properties, sortby, cursor) -> typed values
- temporal.py   the `datetime` parameter -> TimeRange
- crs.py        the CRS the service answers in (crs, bbox-crs, filter-crs) and their axis order
- cql2/         CQL2 text and JSON -> (the cql2 package) CQL2 JSON -> SQL with parameters
- queries.py    one SQL statement per request: items page, one item, a feature's history
- queryables.py the JSON Schema of a layer's queryable properties
"""
