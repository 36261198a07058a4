-- Orders keep their total in cents, filled in for the orders that exist.
ALTER TABLE orders ADD COLUMN total_cents BIGINT;
UPDATE orders SET total_cents = qty * price_cents;
CREATE INDEX orders_total_cents ON orders (total_cents);
