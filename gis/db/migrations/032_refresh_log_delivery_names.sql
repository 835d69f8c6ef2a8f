-- A delivery's refresh used to log the scratch path it was unpacked to (…/gis-delivery-XXXX/delivery.gpkg) as
-- ops.refresh_log.source_path, and a failure's message quoted it. The refresh now logs the delivery's name,
-- "delivery N: <file name as sent>" (gis/deliveries/store.py source_name); rows logged before are renamed
-- likewise where their delivery is known (it records the refresh it made), else to "a delivery: <file>", and
-- the scratch directory is taken out of their messages, so nothing stored needs scrubbing.
UPDATE ops.refresh_log r SET source_path = 'delivery ' || d.delivery_id || ': ' || d.filename
  FROM ops.deliveries d
 WHERE d.refresh_id = r.refresh_id AND r.source_path ~ '/gis-delivery-[^/]+/';

UPDATE ops.refresh_log
   SET source_path = regexp_replace(source_path, '^.*/gis-delivery-[^/]+/', 'a delivery: ')
 WHERE source_path ~ '/gis-delivery-[^/]+/';

UPDATE ops.refresh_log
   SET message = regexp_replace(message, '(/vsi\w+)?(/[^/\s''"]+)*/gis-delivery-[^/\s''"]+/', 'a delivery: ', 'g')
 WHERE message ~ '/gis-delivery-[^/\s''"]+/';
