import type { ReactNode } from "react";
import "./globals.css";

export const metadata = { title: "Plaza chat", description: "Next.js chat with presence on Plaza" };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
