// An HTTP service on the JDK's own server, with no OpenTelemetry code: what
// `kotel.dev/inject-java` instruments without a rebuild (the e2e suite's Java fixture).
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public class App {
    public static void main(String[] args) throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress(8000), 0);
        server.createContext("/hello", exchange -> reply(exchange, "{\"Hello\":\"World\"}"));
        server.createContext("/items/", exchange -> {
            String id = exchange.getRequestURI().getPath().substring("/items/".length());
            reply(exchange, "{\"item_id\":\"" + id + "\"}");
        });
        server.start();
        System.out.println("listening on 8000");
    }

    private static void reply(HttpExchange exchange, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        exchange.sendResponseHeaders(200, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }
}
