DROP INDEX IF EXISTS orders_status;
ALTER TABLE orders DROP COLUMN status;
