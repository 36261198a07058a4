DROP INDEX IF EXISTS orders_total_cents;
ALTER TABLE orders DROP COLUMN total_cents;
